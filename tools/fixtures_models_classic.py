"""PyTorch reference outputs for the networks the articles compare against: ``tests/fixtures/models_classic.npz``.

Cases (seeded weights, see tools/model_fixtures.py):

* ``alexnet``, ``vgg16``: torchvision's ``AlexNet`` and ``vgg16`` with their convolutional ``features``
  as published, 10 classes and the two hidden fully connected layers 64 wide instead of 4096 (the same
  layers in the same order: a 4096-wide classifier would put 58M / 120M seeded weights in every test
  run). Inputs at the smallest size their strides allow: AlexNet 63 x 63 (its last map is 1 x 1, so
  the 6 x 6 adaptive pooling replicates it), VGG-16 32 x 32 (1 x 1 -> 7 x 7). One image: no batch norm.
  ``state_dict_shapes`` stores the keys and shapes of the full 1000-class models.
* ``resnext50_32x4d``: torchvision's model, 1000 classes (keys and shapes stored too), input
  (2, 3, 33, 33) as the ResNet fixture (tools/fixtures_models_resnet.py explains why 33).
* ``se_resnext50_32x4d``: the SE reference of tools/torch_reference_se_resnet.py with torchvision's
  ResNeXt blocks, 10 classes.

Each case's ``torch_float32_error`` (tools/model_fixtures.py) is PyTorch's own float32 error, over a plain
and perturbed runs; the float32 tests allow a stated multiple of it (``tests/helpers.py``).

Run through ``python tools/make_fixtures.py --only models_classic``.
"""
import json

import numpy as np
import torch

import torch_reference_se_resnet as reference
from make_fixtures import save_npz
from model_fixtures import import_torchvision_models, model_fixture


FILE_NAME = "models_classic.npz"
HIDDEN = 64
NUM_CLASSES = 10


def _small_classifier(model, hidden, in_features, dropout_first):
    """torchvision's classifier layers in torchvision's order, with ``hidden`` units instead of 4096."""
    nn = torch.nn
    if dropout_first:       # AlexNet: Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear
        layers = [nn.Dropout(0.5), nn.Linear(in_features, hidden), nn.ReLU(True), nn.Dropout(0.5),
                  nn.Linear(hidden, hidden), nn.ReLU(True), nn.Linear(hidden, NUM_CLASSES)]
    else:                   # VGG: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
        layers = [nn.Linear(in_features, hidden), nn.ReLU(True), nn.Dropout(0.5),
                  nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(hidden, NUM_CLASSES)]
    model.classifier = nn.Sequential(*layers)
    return model


SMALL = {"num_classes": NUM_CLASSES, "hidden": HIDDEN}


def alexnet_case(models):
    """(case, torch model, our name, our kwargs, input shape, checked parameters, full model builder)."""
    return ("alexnet", _small_classifier(models.alexnet(num_classes=NUM_CLASSES), HIDDEN, 256 * 6 * 6, True),
            "alexnet", SMALL, (1, 3, 63, 63), ["features.0.bias", "features.10.bias", "classifier.1.bias"],
            models.alexnet)


def _cases(models):
    # (case, torch model, our name, our kwargs, input shape, checked parameters, full model for the layout)
    small = SMALL
    return [
        alexnet_case(models),
        ("vgg16", _small_classifier(models.vgg16(num_classes=NUM_CLASSES), HIDDEN, 512 * 7 * 7, False),
         "vgg16", small, (1, 3, 32, 32), ["features.0.bias", "features.28.bias", "classifier.0.bias"],
         models.vgg16),
        ("resnext50_32x4d", models.resnext50_32x4d(), "resnext50_32x4d", {}, (2, 3, 33, 33),
         ["bn1.weight", "layer2.0.downsample.1.weight", "layer1.0.bn2.weight"], None),
        ("se_resnext50_32x4d", reference.se_resnext50_32x4d(num_classes=NUM_CLASSES), "se_resnext50_32x4d",
         {"num_classes": NUM_CLASSES}, (2, 3, 33, 33),
         ["bn1.weight", "layer1.0.se.fc1.weight", "layer3.0.bn2.bias"], None),
    ]


def generate(out_dir):
    """Compute every case with PyTorch and write ``out_dir/models_classic.npz``; return ``[path]``."""
    torch.manual_seed(0)
    arrays = {}
    for seed, (case, torch_model, our_name, kwargs, input_shape, checked, full) in enumerate(
            _cases(import_torchvision_models()), start=1):
        arrays.update(model_fixture(case, torch_model, our_name, kwargs, input_shape, seed, checked))
        layout_model = torch_model if full is None and kwargs == {} else (full() if full else None)
        if layout_model is not None:
            shapes = [[name, list(value.shape)] for name, value in layout_model.state_dict().items()]
            arrays[f"models/{case}/state_dict_shapes"] = np.array(json.dumps(shapes))
    return [save_npz(out_dir / FILE_NAME, arrays)]
