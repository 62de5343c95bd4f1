"""Model fixtures for ShuffleNet V1/V2, GhostNet and SqueezeNet -> tests/fixtures/models_shuffle_ghost.npz.

References: torchvision for ShuffleNet V2 and SqueezeNet; ``torch_reference_shuffle_ghost.py`` for
ShuffleNet V1 (written from the paper) and timm for GhostNet (``pip install --no-deps timm``).
Besides the arrays of ``model_fixtures.model_fixture``, every case stores ``state_dict_shapes`` (the
reference model's ``[[key, shape], ...]`` in order, at 1000 classes, so the tests check keys and shapes
without PyTorch). ``torch_float32_error`` (per quantity, from ``model_fixtures``) records the case's
float32 conditioning, from which the float32 tests take their tolerance.
The ShuffleNet V2 1.0x case also stores ``state_dict_shapes_all_sizes`` for x0.5, x1.0, x1.5, x2.0.
"""
import json

import numpy as np
import torch_reference_shuffle_ghost as reference
from make_fixtures import save_npz
from model_fixtures import import_torchvision_models, model_fixture

FILENAME = "models_shuffle_ghost.npz"

# Input shapes. Networks with batch norm use 34 x 34: at 32 x 32 their last stage is 1 x 1, and a
# train-mode batch norm over N*H*W = 2 values makes the input gradient almost exactly zero (both
# degrees of freedom are normalised away), so it would compare rounding noise. 33..64 all give 2 x 2.
# SqueezeNet has no batch norm: one 32 x 32 image. Small shapes keep the .npz under 400 KB.
BN_INPUT = (2, 3, 34, 34)
SQUEEZENET_INPUT = (1, 3, 32, 32)


V2_SIZES = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]


def _cases():
    """``(case, torch model factory, our name, our kwargs, input shape, checked params)`` per fixture.

    Checked parameters: the first convolution, a batch-norm weight in the middle, an SE weight where the
    model has SE, the classifier bias (small arrays only: the file stays small).
    """
    tv = import_torchvision_models()
    v1_kwargs = {"num_classes": 10, "groups": 3, "width_mult": 1.0}
    ghost_kwargs = {"num_classes": 10, "width_mult": 1.0}
    return [
        ("shufflenet_v1_g3", lambda: reference.ShuffleNetV1(**v1_kwargs), "shufflenet_v1", v1_kwargs, BN_INPUT,
         ["conv1.0.weight", "stage3.0.branch.depthwise.1.weight", "stage3.3.branch.depthwise.0.weight", "fc.bias"]),
        ("shufflenet_v2_x1_0", tv.shufflenet_v2_x1_0, "shufflenet_v2_x1_0", {}, BN_INPUT,
         ["conv1.0.weight", "stage3.0.branch1.1.weight", "stage3.3.branch2.3.weight", "fc.bias"]),
        ("ghostnet", lambda: reference.ghostnet(**ghost_kwargs), "ghostnet", ghost_kwargs, BN_INPUT,
         ["conv_stem.weight", "blocks.6.3.ghost1.cheap_operation.1.weight", "blocks.3.0.se.conv_reduce.weight",
          "classifier.bias"]),
        ("squeezenet1_0", tv.squeezenet1_0, "squeezenet1_0", {}, SQUEEZENET_INPUT,
         ["features.0.bias", "features.4.squeeze.weight", "features.12.expand1x1.bias", "classifier.1.bias"]),
        ("squeezenet1_1", tv.squeezenet1_1, "squeezenet1_1", {}, SQUEEZENET_INPUT,
         ["features.0.weight", "features.4.squeeze.weight", "features.12.expand1x1.bias", "classifier.1.bias"]),
    ]


def _reference_state_dict_shapes(case, make_torch_model, our_kwargs):
    """``[[key, shape], ...]`` of the reference model with its default 1000 classes (the real layout)."""
    if case.startswith("shufflenet_v1"):
        torch_model = reference.ShuffleNetV1(groups=our_kwargs["groups"], width_mult=our_kwargs["width_mult"])
    elif case.startswith("ghostnet"):
        torch_model = reference.ghostnet(width_mult=our_kwargs["width_mult"])
    else:
        torch_model = make_torch_model()
    return [[key, list(value.shape)] for key, value in torch_model.state_dict().items()]


def generate(out_dir):
    arrays = {}
    for seed, (case, make_torch_model, our_name, our_kwargs, input_shape, checked) in enumerate(_cases()):
        fixture = model_fixture(case, make_torch_model(), our_name, our_kwargs, input_shape, seed, checked)
        torch_errors = json.loads(str(fixture[f"models/{case}/torch_float32_error"]))
        float32_error = max(torch_errors["train_logits"], torch_errors["grad_x"])
        fixture[f"models/{case}/state_dict_shapes"] = np.array(json.dumps(
            _reference_state_dict_shapes(case, make_torch_model, our_kwargs)))
        if case == "shufflenet_v2_x1_0":          # the other sizes' layouts too (no numerics: same code path)
            tv = import_torchvision_models()
            fixture[f"models/{case}/state_dict_shapes_all_sizes"] = np.array(json.dumps({
                name: [[key, list(value.shape)] for key, value in getattr(tv, name)().state_dict().items()]
                for name in V2_SIZES}))
        arrays.update(fixture)
        print(f"    {case}: PyTorch float32 vs float64 {float32_error:.1e}")
    return [save_npz(out_dir / FILENAME, arrays)]
