"""Datasets for tinycnn: a built-in procedural set, local real data, batching and augmentation.

``shapes`` is built in: a procedural 10-class dataset of 32x32 RGB images generated from a seed in
milliseconds (no download), the default for demos and tests::

    from tinycnn.data import make_shapes, SHAPES_CLASSES
    train_images, train_labels = make_shapes(5000, seed=0)    # (5000, 3, 32, 32) float32, (5000,) int64
    test_images, test_labels = make_shapes(1000, seed=1)

Real data is read from local files only (nothing is ever downloaded):

* :func:`load_mnist` / :func:`load_idx` -- MNIST and Fashion-MNIST IDX files, raw or ``.gz``;
* :func:`load_cifar10` -- the CIFAR-10 python batches;
* :func:`load_image_folder` -- your own images, one sub-folder per class (PNG, JPEG, BMP...).

For pretrained ImageNet networks, :class:`ImageNetPreprocess` prepares a photo as torchvision's weights
expect (resize 256, centre crop 224, ImageNet mean/std) and :data:`IMAGENET_CLASSES` names the 1000 labels.

:func:`load_dataset` does it all from one string and splits off a validation part::

    from tinycnn.data import load_dataset, DataLoader, Compose, RandomCrop, RandomHorizontalFlip
    train, val, class_names, in_channels = load_dataset("folder:~/my_images", image_size=64)
    augment = Compose([RandomCrop(64, padding=4), RandomHorizontalFlip()])
    for x, y in DataLoader(train.images, train.labels, batch_size=32, shuffle=True, transform=augment):
        ...                                                    # x (32, 3, 64, 64) float32, y (32,) int64
"""
from .cifar import CIFAR10_CLASSES, load_cifar10
from .folder import IMAGE_EXTENSIONS, load_image_folder
from .imagenet import IMAGENET_CLASSES, IMAGENET_MEAN, IMAGENET_STD, ImageNetPreprocess, load_rgb_image
from .idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_idx, load_mnist, read_idx
from .loader import (ArrayDataset, Compose, DataLoader, LoadedData, Normalize, RandomCrop,
                     RandomHorizontalFlip, compute_mean_std, load_dataset, parse_data_spec, resize_images,
                     select_classes, to_float32, train_val_split)
from .shapes import SHAPES_CLASSES, make_shapes

__all__ = [
    # built-in procedural dataset
    "SHAPES_CLASSES", "make_shapes",
    # local real data
    "CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS", "MNIST_CLASSES",
    "load_cifar10", "load_idx", "load_image_folder", "load_mnist", "read_idx",
    # containers, splitting, batching, transforms
    "ArrayDataset", "Compose", "DataLoader", "LoadedData", "Normalize", "RandomCrop",
    "RandomHorizontalFlip", "compute_mean_std", "load_dataset", "parse_data_spec", "resize_images",
    "select_classes", "to_float32", "train_val_split",
    # ImageNet inference: preprocessing and class names
    "IMAGENET_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "ImageNetPreprocess", "load_rgb_image",
]
