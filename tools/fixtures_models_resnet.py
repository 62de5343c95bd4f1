"""PyTorch reference outputs for ResNet and SE-ResNet: ``tests/fixtures/models_resnet.npz``.

Cases (seeded weights including batch-norm running statistics, see tools/model_fixtures.py):

* ``resnet18``, ``resnet50``: torchvision's models, 1000 classes, so the keys and shapes are the real
  ones; ``models/<case>/state_dict_shapes`` stores torchvision's ``state_dict`` keys and shapes in order
  (JSON), so the layout test runs without PyTorch;
* ``se_resnet18_<position>`` for the four SE placements of the SENet article (standard, pre, post,
  identity): the independent definition in tools/torch_reference_se_resnet.py (torchvision's ResNet
  with ``torchvision.ops.SqueezeExcitation`` per block), 10 classes to keep the file small. The four
  placements share one code path per block in tinycnn, so SE-ResNet-50 (same blocks as ResNet-50, same
  SE code) is compared live in tests/test_models_resnet.py rather than stored here.

Input (2, 3, 33, 33), not 32 x 32: ResNets downsample by 32, so at 32 x 32 the last stage is 1 x 1 and
training-mode batch norm there normalises 2 numbers per channel. Each channel then becomes +-1 and its
input gradient is scaled by ``eps / (var + eps)``, a cancellation that even PyTorch's float32 cannot
resolve (its float32 input gradient of ResNet-18 differs from its float64 one by 4%, of ResNet-50 by
180%). At 33 x 33 the last stage is 2 x 2 (8 numbers per channel) and PyTorch's float32 ResNet-18
agrees with its float64 to 5e-6.

Checked parameters: the stem batch norm ``bn1.weight`` (its gradient has come back through every block),
a projection-shortcut batch norm, a first-stage batch norm (small: 64 numbers) and the SE ``fc`` layers.
Not ``conv1.weight`` (9,408 numbers, 75 KB) and not the classifier bias (its gradient is the upstream
gradient summed over the batch whatever the network does). The file must stay below 400 KB: each
``grad_x`` is 52 KB.

Run through ``python tools/make_fixtures.py --only models_resnet``.
"""
import json

import torch

import torch_reference_se_resnet as reference
from make_fixtures import save_npz
from model_fixtures import import_torchvision_models, model_fixture

FILE_NAME = "models_resnet.npz"
INPUT_SHAPE = (2, 3, 33, 33)
SE_NUM_CLASSES = 10


def _torchvision_cases(models):
    # (case, torch model, our name, our kwargs, checked parameters)
    return [
        ("resnet18", models.resnet18(), "resnet18", {},
         ["bn1.weight", "layer2.0.downsample.1.weight", "layer1.1.bn2.bias"]),
        ("resnet50", models.resnet50(), "resnet50", {},
         ["bn1.weight", "layer2.0.downsample.1.weight", "layer1.2.bn2.weight"]),
    ]


def _se_cases():
    cases = []
    for position in reference.SE_POSITIONS:
        kwargs = {"num_classes": SE_NUM_CLASSES, "se_position": position}
        cases.append((f"se_resnet18_{position}", reference.se_resnet18(**kwargs), "se_resnet18", kwargs,
                      ["bn1.weight", "layer1.0.se.fc1.weight", "layer2.0.se.fc2.bias"]))
    return cases


def generate(out_dir):
    """Compute every case with PyTorch and write ``out_dir/models_resnet.npz``; return ``[path]``."""
    torch.manual_seed(0)
    arrays = {}
    cases = _torchvision_cases(import_torchvision_models()) + _se_cases()
    for seed, (case, torch_model, our_name, our_kwargs, checked) in enumerate(cases, start=1):
        arrays.update(model_fixture(case, torch_model, our_name, our_kwargs, INPUT_SHAPE, seed, checked))
        if not case.startswith("se_"):
            shapes = [[name, list(value.shape)] for name, value in torch_model.state_dict().items()]
            arrays[f"models/{case}/state_dict_shapes"] = json.dumps(shapes)
    return [save_npz(out_dir / FILE_NAME, arrays)]
