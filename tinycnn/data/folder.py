"""Your own images: a folder with one sub-folder per class (torchvision's ``ImageFolder`` layout)::

    root/
      cats/  001.jpg  002.png ...
      dogs/  a.jpeg  b.bmp ...

Every image is decoded with Pillow (installed with matplotlib), converted to RGB (grayscale is
repeated over the three channels; an alpha channel is dropped, as in torchvision), and resized to
``image_size x image_size`` with Pillow's bilinear filter (the aspect ratio is not kept: crop your
images first if that matters). Large JPEGs are first decoded at a reduced scale (1/2, 1/4 or 1/8,
never below ``image_size``; Pillow's ``draft``), which makes loading several times faster. Labels
number the classes in sorted folder-name order.

Files whose extension is not an image extension, and hidden files and folders (names starting with
a dot, such as Jupyter's ``.ipynb_checkpoints``), are skipped; images in nested sub-folders of a class
folder belong to that class.
"""
import os

import numpy as np

from .._system import check_fits

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _is_hidden(name):
    return name.startswith(".")


def _class_folders(root):
    """Sorted names of the non-hidden sub-folders of ``root``."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not _is_hidden(entry.name))


def _image_files(folder):
    """Sorted paths of the image files in ``folder`` and its non-hidden sub-folders."""
    paths = []
    for parent, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not _is_hidden(name))   # prune hidden ones
        paths.extend(os.path.join(parent, name) for name in sorted(files)
                     if not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS))
    return paths


def _resolve_classes(classes, found, root):
    """The class names to load, in label order: all ``found`` (sorted) or the requested subset."""
    if classes is None:
        return found
    if isinstance(classes, str):
        raise TypeError(f"classes must be a list of folder names; got the string {classes!r}")
    names = [str(name) for name in classes]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"classes must be a non-empty list without repeats; got {list(classes)}")
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"no class folder {', '.join(map(repr, missing))} in {root}; "
                         f"found {found}")
    return names


# Pillow modes holding more than 8 bits per pixel, and the largest value of each (16-bit PNG/TIFF
# greyscale opens as "I;16*" or as 32-bit "I" holding 0..65535)
_WIDE_MODE_MAXIMUM = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def _to_rgb8(image):
    """A Pillow image of any mode -> 8-bit RGB, scaled by the image's real bit depth.

    ``Image.convert("RGB")`` clips wide greyscale (16-bit) values at 255, so a 0..65535 gradient would
    load almost all white; those modes are scaled ``value * 255 / 65535`` first. Palette (P), LA, RGBA,
    CMYK... are converted by Pillow (alpha dropped). 16-bit RGB PNGs are already reduced to 8 bits by
    Pillow when it opens them.
    """
    from PIL import Image

    maximum = _WIDE_MODE_MAXIMUM.get(image.mode)
    if maximum is None:
        return image.convert("RGB")                           # L, LA, P, RGBA, CMYK... -> RGB
    values = np.asarray(image, dtype=np.float64)              # (H, W)
    grey = np.clip(np.rint(values * (255 / maximum)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _load_image(path, image_size):
    """One image file -> (3, S, S) uint8 array; ValueError naming the file if Pillow cannot read it."""
    from PIL import Image                                     # imported here: only this loader needs it

    try:
        with Image.open(path) as image:
            image.draft("RGB", (image_size, image_size))      # JPEG: decode at a reduced scale, >= S
            rgb = _to_rgb8(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # UnidentifiedImageError is an OSError; a decompression bomb is an image too large to decode safely
        raise ValueError(f"cannot read image {path}: {error}") from None
    resized = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)      # (S, S, 3) -> (3, S, S)


def load_image_folder(root, image_size=32, classes=None, as_float=True):
    """Load every image below ``root/<class name>/`` into one array.

    Parameters
    ----------
    root : str or path-like
        A folder with one sub-folder per class.
    image_size : int
        Every image is resized (bilinear, aspect ratio not kept) to ``image_size x image_size``.
    classes : list of str, optional
        Load only these class folders; labels then number them in the order given. Default: every
        non-hidden sub-folder, in sorted order.
    as_float : bool
        True (default): float32 in [0, 1]. False: uint8, 4x less memory
        (:class:`tinycnn.data.DataLoader` scales uint8 batches itself).

    Returns
    -------
    images : (n, 3, image_size, image_size) float32 in [0, 1], or uint8
    labels : (n,) int64, ``class_names[labels[i]]`` is the folder of image ``i``
    class_names : tuple of str

    Raises
    ------
    FileNotFoundError
        ``root`` does not exist.
    ValueError
        ``root`` has no class sub-folders, a class folder holds no image (the message names it), an
        image cannot be decoded (the message names the file), or ``classes`` names a missing folder.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive int; got {image_size!r}")
    image_size = int(image_size)
    root = os.fspath(root)
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    if not os.path.isdir(root):
        raise ValueError(f"image folder {root} is a file; expected a folder with one sub-folder per class")
    found = _class_folders(root)
    if not found:
        raise ValueError(f"{root} has no class sub-folders; expected {root}/<class name>/<images>, "
                         f"one sub-folder per class")
    class_names = _resolve_classes(classes, found, root)

    files_per_class = []
    for name in class_names:
        files = _image_files(os.path.join(root, name))
        if not files:
            raise ValueError(f"class folder {os.path.join(root, name)} holds no image "
                             f"(looked for {', '.join(IMAGE_EXTENSIONS)})")
        files_per_class.append(files)

    total = sum(len(files) for files in files_per_class)
    check_fits(total * 3 * image_size * image_size * (5 if as_float else 1),   # uint8, then float32 copy
               f"the image folder {root} ({total} images at {image_size} x {image_size})")
    images = np.empty((total, 3, image_size, image_size), dtype=np.uint8)    # filled one image at a time
    labels = np.empty(total, dtype=np.int64)
    index = 0
    for label, files in enumerate(files_per_class):
        for path in files:
            images[index] = _load_image(path, image_size)
            labels[index] = label
            index += 1
    if as_float:
        images = images.astype(np.float32) / np.float32(255)
    return images, labels, tuple(class_names)
