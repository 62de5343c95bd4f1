"""PyTorch reference outputs for the MobileNet family: ``tests/fixtures/models_mobilenet{,_v3}.npz``.

Cases (seeded weights including batch-norm running statistics, see tools/model_fixtures.py):

* ``mobilenet_v2``, ``mobilenet_v3_large``, ``mobilenet_v3_small``: torchvision's models, 1000 classes,
  so the keys and shapes are the real ones. ``models/<case>/state_dict_shapes`` also stores torchvision's
  ``state_dict`` keys and shapes in order (JSON), so the layout test runs without PyTorch;
* ``mobilenet_v1``, ``mobilenext_identity0_5`` (width 1.0, identity tensor multiplier 0.5) and
  ``mobilenext_w0_5`` (width 0.5, full shortcuts): the independent definitions in
  tools/torch_reference_mobilenet.py, 10 classes to keep the files small.

**Input (2, 3, 33, 33), not 32 x 32.** These networks down-sample by 32, so a 32 x 32 input leaves a
1 x 1 map in the last stage, and a training-mode batch norm there normalises N * H * W = 2 values per
channel: its output is +-1 (times gamma, plus beta) whatever the input, and the gradient through it is
an eps-sized remainder of a cancellation, i.e. rounding noise (float64 mismatches of 1e-7, float32 of
100%). 33 x 33 is the smallest input with a 2 x 2 last map (33 -> 17 -> 9 -> 5 -> 3 -> 2): 8 values.

``models/<case>/torch_float32_error`` (JSON) records how far PyTorch's *own* float32 run lands from the
float64 reference, per stored quantity: the float32 conditioning of the case, which the float32 tests
use to set their tolerance (train-mode MobileNeXt is ill-conditioned: PyTorch itself is percents off).

V3 goes to its own file because each file must stay below 400 KB (``grad_x`` alone is ~50 KB a case).
Run through ``python tools/make_fixtures.py --only models_mobilenet``.
"""
import json

import torch
import torch.nn.functional as F
import torch_reference_mobilenet as reference
from make_fixtures import save_npz
from model_fixtures import import_torchvision_models, model_fixture
from torch import nn

FILE_NAME = "models_mobilenet.npz"           # V1, V2, MobileNeXt
V3_FILE_NAME = "models_mobilenet_v3.npz"     # V3 Large and Small
INPUT_SHAPE = (2, 3, 33, 33)
TORCHVISION_CASES = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")


def _torchvision_cases(models):
    # (case, torch model, our name, our kwargs, checked parameters). Checked: the first conv (its gradient
    # has passed back through the whole network), batch-norm weights, an SE fc (V3). Not the classifier
    # bias: its gradient is the upstream gradient summed over the batch whatever the network does. Not a
    # bias that feeds a 1x1 conv + training-mode batch norm (V2's project biases): the next batch norm
    # subtracts every per-channel constant, so that gradient is exactly 0 and the reference is noise.
    return [
        ("mobilenet_v2", models.mobilenet_v2(), "mobilenet_v2", {},
         ["features.0.0.weight", "features.9.conv.1.1.weight", "features.17.conv.3.weight"]),
        ("mobilenet_v3_large", models.mobilenet_v3_large(), "mobilenet_v3_large", {},
         ["features.0.0.weight", "features.8.block.1.1.weight", "features.4.block.2.fc1.weight"]),
        ("mobilenet_v3_small", models.mobilenet_v3_small(), "mobilenet_v3_small", {},
         ["features.0.0.weight", "features.1.block.1.fc2.weight", "features.6.block.0.1.weight"]),
    ]


def _reference_cases():
    # MobileNeXt with identity tensor multiplier 0.5 (the shortcut adds only half the channels), and at width 0.5.
    return [
        ("mobilenet_v1", reference.mobilenet_v1(num_classes=10), "mobilenet_v1", {"num_classes": 10},
         ["features.0.0.weight", "features.7.pointwise.1.weight", "features.12.depthwise.1.bias",
          "classifier.bias"]),
        ("mobilenext_identity0_5", reference.mobilenext(num_classes=10, identity_tensor_multiplier=0.5),
         "mobilenext", {"num_classes": 10, "identity_tensor_multiplier": 0.5},
         ["features.0.0.weight", "features.7.reduce.1.weight", "features.13.depthwise_out.1.weight",
          "classifier.1.bias"]),
        ("mobilenext_w0_5", reference.mobilenext(num_classes=10, width_mult=0.5), "mobilenext",
         {"num_classes": 10, "width_mult": 0.5},
         ["features.0.0.weight", "features.4.depthwise_in.1.weight", "features.9.expand.1.bias",
          "classifier.1.bias"]),
    ]


class _ExactHardsigmoid(nn.Module):
    """``relu6(x + 3) / 6`` with autograd's exact derivative 1/6.

    PyTorch's CPU ``hardsigmoid`` backward multiplies by ``1.0f / 6.0f``, a *float32* constant, even for
    float64 tensors (ATen/native/cpu/Activation.cpp): a relative error of 3e-8 that would dominate a
    float64 comparison. Same function, same values at the kinks (derivative 0 at x = -3 and x = 3).
    """

    def forward(self, x):
        return F.relu6(x + 3) / 6


def _exact_hardsigmoid(torch_model):
    for module in torch_model.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.Hardsigmoid):
                setattr(module, name, _ExactHardsigmoid())
    return torch_model


def generate(out_dir):
    """Compute every case with PyTorch; write ``models_mobilenet.npz`` and ``models_mobilenet_v3.npz``.

    Two files because each must stay below 400 KB (one file would be ~410 KB). Returns both paths.
    """
    torch.manual_seed(0)
    files = {FILE_NAME: {}, V3_FILE_NAME: {}}
    cases = _torchvision_cases(import_torchvision_models()) + _reference_cases()
    for seed, (case, torch_model, our_name, our_kwargs, checked) in enumerate(cases, start=1):
        torch_model = _exact_hardsigmoid(torch_model)
        fixture = model_fixture(case, torch_model, our_name, our_kwargs, INPUT_SHAPE, seed, checked)
        if case in TORCHVISION_CASES:
            shapes = [[name, list(value.shape)] for name, value in torch_model.state_dict().items()]
            fixture[f"models/{case}/state_dict_shapes"] = json.dumps(shapes)
        files[V3_FILE_NAME if case.startswith("mobilenet_v3") else FILE_NAME].update(fixture)
    return [save_npz(out_dir / name, arrays) for name, arrays in files.items()]
