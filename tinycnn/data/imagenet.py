"""ImageNet inference inputs: the standard preprocessing and the 1000 class names.

Every torchvision (and timm ``tv_in1k``) ImageNet checkpoint was evaluated on images prepared the same
way -- resize the shorter side to 256 pixels (bilinear), cut out the central 224 x 224, scale to [0, 1],
subtract the ImageNet mean and divide by its standard deviation, per channel::

    from tinycnn.data import ImageNetPreprocess, IMAGENET_CLASSES
    preprocess = ImageNetPreprocess()
    x = preprocess("chelsea.png")[None]          # (1, 3, 224, 224) float32
    ...                                          # logits = model(x); IMAGENET_CLASSES[logits.argmax()]

The steps follow torchvision's ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()``, ``Normalize(...)`` on
a Pillow image, so a photo becomes the same array here as there (Pillow does the resizing in both).
The class names (``tench``, ``goldfish``, ... ``toilet tissue``) ship with tinycnn in
``imagenet_classes.txt``, one per line in label order: the names torchvision's weights use.
"""
import os
from importlib import resources

import numpy as np

from .loader import Normalize

__all__ = ["IMAGENET_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "ImageNetPreprocess", "load_rgb_image"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)     # per-channel mean of the ImageNet training images, RGB in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)      # ... and their standard deviation


def _read_class_names():
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:
        raise RuntimeError(f"tinycnn's imagenet_classes.txt holds {len(names)} names instead of 1000: "
                           f"the installation is damaged")
    return names


IMAGENET_CLASSES = _read_class_names()


def load_rgb_image(image):
    """A Pillow RGB image from a path, a Pillow image, or an ``(H, W)``/``(H, W, 3)`` uint8 array.

    Grayscale, palette, RGBA and CMYK images are converted to RGB. Raises ``FileNotFoundError`` for a
    missing file and ``ValueError`` naming the file when Pillow cannot decode it.
    """
    from PIL import Image                                # Pillow comes with matplotlib

    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such image file: {path}")
        try:
            with Image.open(path) as opened:
                return opened.convert("RGB")
        except (OSError, ValueError, SyntaxError) as error:          # UnidentifiedImageError is an OSError
            raise ValueError(f"cannot read image {path}: {error}") from None
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"an image array must be uint8 of shape (H, W) or (H, W, 3); got {image.dtype} "
                             f"of shape {image.shape}")
        return Image.fromarray(image).convert("RGB")
    raise TypeError(f"image must be a path, a PIL image or a uint8 array; got {type(image).__name__}")


class ImageNetPreprocess:
    """Photo -> network input, as for torchvision's ImageNet weights: resize, centre crop, normalise.

    Parameters
    ----------
    resize_size : int
        The shorter side is resized to this (bilinear, Pillow's filter, which smooths when shrinking);
        the longer side keeps the aspect ratio: ``int(resize_size * long / short)``.
    crop_size : int
        The central ``crop_size x crop_size`` square is kept; its top-left corner is
        ``round((H - crop_size) / 2), round((W - crop_size) / 2)``. Must be ``<= resize_size``.
    mean, std : 3 floats
        Per-channel statistics for ``(x - mean) / std`` after scaling pixels to [0, 1].

    Calling it on an image (path, Pillow image or uint8 ``(H, W, 3)`` array) returns the
    ``(3, crop_size, crop_size)`` float32 input; :meth:`batch` stacks several. ``self.normalize`` is the
    :class:`~tinycnn.data.Normalize` step, whose ``inverse`` turns an input back into a displayable image.
    """

    def __init__(self, resize_size=256, crop_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        for name, value in (("resize_size", resize_size), ("crop_size", crop_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if crop_size > resize_size:
            raise ValueError(f"crop_size ({crop_size}) must not exceed resize_size ({resize_size})")
        self.resize_size, self.crop_size = int(resize_size), int(crop_size)
        self.normalize = Normalize(mean, std)
        if len(self.normalize.mean) != 3:
            raise ValueError(f"mean and std must have 3 values (R, G, B); got {len(self.normalize.mean)}")

    def resized_and_cropped(self, image):
        """The ``(crop_size, crop_size, 3)`` uint8 crop that the network sees (before normalising)."""
        from PIL import Image

        rgb = load_rgb_image(image)
        width, height = rgb.size
        short, long = min(width, height), max(width, height)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)
        new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_width, new_height) != (width, height):
            rgb = rgb.resize((new_width, new_height), Image.Resampling.BILINEAR)
        top = int(round((new_height - self.crop_size) / 2.0))
        left = int(round((new_width - self.crop_size) / 2.0))
        crop = rgb.crop((left, top, left + self.crop_size, top + self.crop_size))
        return np.asarray(crop, dtype=np.uint8)

    def __call__(self, image):
        """image -> ``(3, crop_size, crop_size)`` float32, normalised."""
        pixels = self.resized_and_cropped(image)                               # (S, S, 3) uint8
        x = pixels.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)   # (1, 3, S, S) in [0, 1]
        return self.normalize(x)[0]

    def batch(self, images):
        """Several images -> ``(N, 3, crop_size, crop_size)`` float32."""
        return np.stack([self(image) for image in images])

    def __repr__(self):
        return (f"ImageNetPreprocess(resize_size={self.resize_size}, crop_size={self.crop_size}, "
                f"{self.normalize!r})")
