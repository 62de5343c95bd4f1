"""Datasets for tinycnn.

``shapes`` is built in: a procedural 10-class dataset of 32x32 RGB images generated from a seed in
milliseconds (no download), the default for demos and tests::

    from tinycnn.data import make_shapes, SHAPES_CLASSES
    train_images, train_labels = make_shapes(5000, seed=0)    # (5000, 3, 32, 32) float32, (5000,) int64
    test_images, test_labels = make_shapes(1000, seed=1)
"""
from .shapes import SHAPES_CLASSES, make_shapes

__all__ = ["SHAPES_CLASSES", "make_shapes"]
