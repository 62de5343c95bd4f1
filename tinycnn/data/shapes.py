"""``shapes``: a procedural image-classification dataset, generated in milliseconds, never downloaded.

Ten classes of small RGB images: five shapes and five textures.

=====  ======================  ==========================================================
label  name                    what is drawn
=====  ======================  ==========================================================
0      circle                  filled disc
1      square                  filled square (tilted up to 10 degrees)
2      triangle                filled equilateral triangle, any rotation
3      ring                    annulus (a circle outline)
4      cross                   plus sign (tilted up to 10 degrees)
5      horizontal_stripes      stripes across the whole image, within 10 degrees of horizontal
6      vertical_stripes        the same, near vertical
7      diagonal_stripes        the same, near 45 or 135 degrees
8      checkerboard            chequered texture
9      dots                    a lattice of small dots
=====  ======================  ==========================================================

Every image has a random background colour and a random foreground colour (at least 0.5 apart in
RGB), random position, size, period and phase, soft (anti-aliased) edges and Gaussian pixel noise.
The colour carries no information about the class, so a classifier has to look at shape, texture
and orientation: a mean-colour classifier stays far below 100 %, while a small CNN learns the task
in a few epochs. Telling horizontal from vertical stripes needs orientation-selective filters, a
ring from a circle needs more than a blob detector, and stripes at random phase defeat any linear
classifier on raw pixels.

Generation is vectorised NumPy: each shape is a *signed distance* ``sd`` (pixels; > 0 inside)
computed for a whole batch at once, and ``clip(sd + 0.5, 0, 1)`` is its anti-aliased coverage.
It is deterministic from ``seed``.
"""
import numbers

import numpy as np

from .._system import check_fits

__all__ = ["SHAPES_CLASSES", "make_shapes"]

SHAPES_CLASSES = ("circle", "square", "triangle", "ring", "cross",
                  "horizontal_stripes", "vertical_stripes", "diagonal_stripes", "checkerboard", "dots")

_MAX_TILT = np.deg2rad(10.0)       # tilt of squares, crosses, stripes and lattices
_MIN_COLOUR_DISTANCE = 0.5         # |foreground - background| in RGB, so every shape is visible
_CHUNK = 2048                      # images rendered at a time (bounds the temporary memory)


# --------------------------------------------------------------------------------------------------
# Signed distances, one function per class. Arguments: pixel coordinates relative to the shape's
# centre, rotated into the shape's frame: u, v of shape (k, H, W); per-image parameters of shape
# (k, 1, 1). Returned: sd (k, H, W), in pixels, positive inside.
# --------------------------------------------------------------------------------------------------

def _circle(u, v, p):
    return p["radius"] - np.hypot(u, v)


def _square(u, v, p):
    half_side = 0.8 * p["radius"]                       # same area as the circle, roughly
    return half_side - np.maximum(np.abs(u), np.abs(v))


def _triangle(u, v, p):
    inradius = 0.55 * p["radius"]                       # circumradius 1.1 r: area close to the disc's
    sd = None
    for k in range(3):                                  # inside = on the inner side of all three edges
        angle = 2 * np.pi * k / 3
        edge = inradius - (np.cos(angle) * u + np.sin(angle) * v)
        sd = edge if sd is None else np.minimum(sd, edge)
    return sd


def _ring(u, v, p):
    half_width = np.maximum(1.2, 0.15 * p["radius"])
    return half_width - np.abs(np.hypot(u, v) - 0.85 * p["radius"])


def _cross(u, v, p):
    arm_half_width = np.maximum(1.2, 0.25 * p["radius"])
    length = p["radius"]
    bar_along_u = np.minimum(arm_half_width - np.abs(v), length - np.abs(u))
    bar_along_v = np.minimum(arm_half_width - np.abs(u), length - np.abs(v))
    return np.maximum(bar_along_u, bar_along_v)         # union of the two bars


def _stripes(u, v, p):
    # stripes run along u: the distance to the nearest stripe centre line is measured along v
    offset = np.mod(v + p["phase_v"], p["period"]) - p["period"] / 2     # in [-period/2, period/2)
    return p["period"] / 4 - np.abs(offset)             # half of each period is covered


def _checkerboard(u, v, p):
    offset_u = np.mod(u + p["phase_u"], p["period"]) - p["period"] / 2
    offset_v = np.mod(v + p["phase_v"], p["period"]) - p["period"] / 2
    sd_u = p["period"] / 4 - np.abs(offset_u)           # > 0 inside a column band
    sd_v = p["period"] / 4 - np.abs(offset_v)           # > 0 inside a row band
    inside = (sd_u > 0) != (sd_v > 0)                   # exactly one of the two bands: a dark/light cell
    distance_to_edge = np.minimum(np.abs(sd_u), np.abs(sd_v))
    return np.where(inside, distance_to_edge, -distance_to_edge)


def _dots(u, v, p):
    offset_u = np.mod(u + p["phase_u"], p["period"]) - p["period"] / 2
    offset_v = np.mod(v + p["phase_v"], p["period"]) - p["period"] / 2
    return 0.3 * p["period"] - np.hypot(offset_u, offset_v)


# name -> (signed distance, how the frame is oriented: "tilt", "any", or a base angle in degrees)
_CLASS_RENDERERS = {
    "circle": (_circle, "tilt"),
    "square": (_square, "tilt"),
    "triangle": (_triangle, "any"),
    "ring": (_ring, "tilt"),
    "cross": (_cross, "tilt"),
    "horizontal_stripes": (_stripes, 0.0),
    "vertical_stripes": (_stripes, 90.0),
    "diagonal_stripes": (_stripes, "diagonal"),
    "checkerboard": (_checkerboard, "tilt"),
    "dots": (_dots, "tilt"),
}


def _resolve_classes(classes):
    if classes is None:
        return list(SHAPES_CLASSES)
    if isinstance(classes, (str, numbers.Integral)):
        raise TypeError(f"classes must be a list of class names or indices; got {classes!r}")
    names = []
    for item in classes:
        if isinstance(item, str):
            if item not in SHAPES_CLASSES:
                raise ValueError(f"unknown class {item!r}; choose from {SHAPES_CLASSES}")
            names.append(item)
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
            if not 0 <= item < len(SHAPES_CLASSES):
                raise ValueError(f"class index {item} out of range [0, {len(SHAPES_CLASSES)})")
            names.append(SHAPES_CLASSES[item])
        else:
            raise TypeError(f"classes must contain names or indices; got {item!r}")
    if len(names) < 1 or len(set(names)) != len(names):
        raise ValueError(f"classes must be a non-empty list without repeats; got {list(classes)}")
    return names


def _draw_parameters(rng, n, image_size):
    """All random choices for ``n`` images (every class draws the same set, so draws stay aligned)."""
    radius = rng.uniform(0.22, 0.40, n) * image_size                 # shape half-size, pixels
    margin = 1.05 * radius
    params = {
        "radius": radius,
        "center_x": rng.uniform(margin, image_size - margin),
        "center_y": rng.uniform(margin, image_size - margin),
        "tilt": rng.uniform(-_MAX_TILT, _MAX_TILT, n),
        "any_angle": rng.uniform(0.0, 2 * np.pi, n),
        "diagonal": np.where(rng.random(n) < 0.5, np.pi / 4, 3 * np.pi / 4),
        "period": rng.uniform(0.15, 0.26, n) * image_size,          # stripes/lattice, pixels
        "phase_u": rng.uniform(0.0, 1.0, n),                          # in periods; scaled below
        "phase_v": rng.uniform(0.0, 1.0, n),
    }
    params["phase_u"] = params["phase_u"] * params["period"]
    params["phase_v"] = params["phase_v"] * params["period"]
    background = rng.random((n, 3))
    foreground = rng.random((n, 3))
    too_close = np.linalg.norm(foreground - background, axis=1) < _MIN_COLOUR_DISTANCE
    while too_close.any():                                              # redraw until visible
        foreground[too_close] = rng.random((int(too_close.sum()), 3))
        too_close = np.linalg.norm(foreground - background, axis=1) < _MIN_COLOUR_DISTANCE
    params["background"], params["foreground"] = background, foreground
    return params


def _render_coverage(name, params, index, image_size):
    """Anti-aliased coverage in [0, 1], shape (k, H, W), for the images ``index`` of class ``name``."""
    signed_distance, orientation = _CLASS_RENDERERS[name]
    p = {key: value[index].astype(np.float32)[:, None, None] for key, value in params.items()
         if value.ndim == 1}                                                # each (k, 1, 1)
    if orientation == "any":
        angle = p["any_angle"]
    elif orientation == "diagonal":
        angle = p["diagonal"] + p["tilt"]
    elif orientation == "tilt":
        angle = p["tilt"]
    else:
        angle = np.float32(np.deg2rad(orientation)) + p["tilt"]
    centres = np.arange(image_size, dtype=np.float32) + 0.5           # pixel centres
    dx = centres[None, None, :] - p["center_x"]                         # (k, 1, W)
    dy = centres[None, :, None] - p["center_y"]                         # (k, H, 1)
    cos, sin = np.cos(angle), np.sin(angle)
    u = cos * dx + sin * dy                                             # (k, H, W): along the shape's axis
    v = -sin * dx + cos * dy                                            # (k, H, W): across it
    return np.clip(signed_distance(u, v, p) + 0.5, 0.0, 1.0)


def make_shapes(n, seed=0, image_size=32, noise=0.08, classes=None):
    """Generate ``n`` labelled images of the ``shapes`` dataset.

    Parameters
    ----------
    n : int
        Number of images. Classes are balanced: counts differ by at most one.
    seed : int
        Everything is drawn from ``numpy.random.default_rng(seed)``: same seed, same images. Use
        different seeds for training and test sets.
    image_size : int
        Height and width (>= 8); shapes, periods and positions scale with it.
    noise : float
        Standard deviation of the Gaussian pixel noise (before clipping to [0, 1]).
    classes : list of names or indices, optional
        A subset of :data:`SHAPES_CLASSES`; labels then number these classes ``0..len(classes)-1``
        in the order given. Default: all ten.

    Returns
    -------
    images : (n, 3, image_size, image_size) float32 in [0, 1]
    labels : (n,) int64
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a non-negative int; got {n!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8; got {image_size!r}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0; got {noise!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int; got {seed!r}")
    names = _resolve_classes(classes)
    n, image_size = int(n), int(image_size)
    check_fits(n * 3 * image_size * image_size * 4,           # the float32 images, before drawing any
               f"the shapes data set ({n} images of 3 x {image_size} x {image_size}, float32)")
    rng = np.random.default_rng(seed)

    labels = rng.permutation(np.arange(n) % len(names)).astype(np.int64)   # balanced, shuffled
    params = _draw_parameters(rng, n, image_size)
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        coverage = np.empty((stop - start, image_size, image_size), dtype=np.float32)  # (k, H, W)
        for label, name in enumerate(names):
            index = start + np.flatnonzero(labels[start:stop] == label)
            if index.size:
                coverage[index - start] = _render_coverage(name, params, index, image_size)
        background = params["background"][start:stop].astype(np.float32)[:, :, None, None]  # (k, 3, 1, 1)
        foreground = params["foreground"][start:stop].astype(np.float32)[:, :, None, None]
        chunk = background + (foreground - background) * coverage[:, None]                  # (k, 3, H, W)
        if noise > 0:
            chunk += np.float32(noise) * rng.standard_normal(chunk.shape, dtype=np.float32)
        images[start:stop] = np.clip(chunk, 0.0, 1.0)
    return images, labels
