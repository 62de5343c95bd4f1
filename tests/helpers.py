"""Test helpers shared by every test file: ``from helpers import assert_close, directional_gradcheck``.

(``tests/conftest.py`` puts this directory on ``sys.path`` and also provides the ``rng`` fixture.)

Tolerances, keyed by dtype, are relative to the scale of the expected values (their largest magnitude):

* float64: ``1e-10``. Two correct float64 computations of a sum of K products differ by about
  ``sqrt(K) * 1e-16`` of the scale (different summation orders); 1e-10 leaves a million-fold margin
  and still catches any indexing mistake, which is an O(1) error.
* float32: ``1e-4``. float32 carries ~7 digits (eps 1.2e-7); comparing a float32 result with a float64
  reference adds the rounding of the inputs, so errors of ~sqrt(K) * 1e-7 are normal for our small K.

Also here, so that each is written once: float64 gradient and adjoint checks (``assert_gradcheck``,
``assert_vdot_equal``; ``gradcheck_layer`` for ``tinycnn.nn`` layers), the small builders of the
convolution-kernel tests (``pair``, ``label``, ``as64``, ``relayout`` and its ``LAYOUTS``), and the loading /
regeneration checks of the committed ``tests/fixtures/*.npz`` files, and writers of small data files
(IDX, images) for the loader and command-line tests.
"""
import gzip
import io
import itertools
import json
import math
import pathlib
import pickle
import struct
import sys

import numpy as np
import pytest

TOLERANCES = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}

# Float32 against a PyTorch fixture: the bound comes from the case itself, not from one CPU. Each fixture
# generator re-runs its case in PyTorch's float32 and records how far that lands from PyTorch's float64
# (``torch_float32_error``, relative to the largest reference value): the case's own float32 conditioning
# (a batch norm over few values amplifies rounding 1000-fold, a 3 x 3 convolution does not). Our float32
# run is another rounding of the same computation (another summation order, another vector width: AVX2
# and AVX-512 machines differ), so it may land a few times farther than PyTorch's: we allow
# FLOAT32_FACTOR times PyTorch's error. Measured on an AMD EPYC (AVX2) over the 589 float32 fixture
# comparisons: ours / PyTorch's median 1.0, at most 3.9 where the bound is above the floor. Model
# fixtures record the largest error over PyTorch runs with 1-ulp perturbed data
# (tools/model_fixtures.py): a ReLU input within rounding distance of 0 flips its mask on one CPU and
# not on another, and that sensitivity belongs to the case. The floor covers cases where PyTorch's
# float32 result happens to round within an ulp or two of float64 (a pooling, a short sum), where the
# bound would otherwise fall below the rounding of the float32 inputs themselves: 64 float32 ulps.
FLOAT32_FACTOR = 8
FLOAT32_FLOOR = 64 * float(np.finfo(np.float32).eps)   # 7.6e-6


def float32_tolerance(torch_float32_error):
    """Relative float32 tolerance of a fixture quantity: ``max(FLOAT32_FACTOR * error, FLOAT32_FLOOR)``."""
    return max(FLOAT32_FACTOR * float(torch_float32_error), FLOAT32_FLOOR)


def fixture_tolerance(torch_float32_errors, key, dtype):
    """Relative tolerance for fixture quantity ``key`` at ``dtype``: ``TOLERANCES`` for float64, else
    :func:`float32_tolerance` of the error that the generator recorded for ``key``."""
    if np.dtype(dtype) == np.float64:
        return TOLERANCES[np.dtype(np.float64)]
    return float32_tolerance(torch_float32_errors[key])
GRADCHECK_RTOL = 1e-6    # central differences, eps=1e-6: rounding ~1e-16 * |f| / eps ~ 1e-10 relative
ADJOINT_RTOL = 1e-12     # of |a|*|b| (Cauchy-Schwarz bound of vdot(a, b)); rounding is ~sqrt(K) * 1e-16


def assert_close(actual, expected, dtype, tolerance=None):
    """Assert ``max|actual - expected| <= tolerance * max|expected|`` and equal shapes.

    ``tolerance`` is relative, ``TOLERANCES[dtype]`` unless given (fixture tests pass
    :func:`fixture_tolerance`). ``actual`` must also *have* dtype ``dtype`` (kernels compute in their
    input's dtype); ``expected`` may be float64 (e.g. a PyTorch fixture) when ``actual`` is float32.
    """
    dtype = np.dtype(dtype)
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == dtype, f"result has dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    scale = float(np.max(np.abs(expected), initial=0.0))
    error = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    relative = TOLERANCES[dtype] if tolerance is None else tolerance
    assert error <= relative * scale, (f"max abs error {error:.3g} > {relative:g} x scale {scale:.3g} "
                                f"({dtype}, shape {actual.shape})")


def directional_gradcheck(f, x, grad, eps=1e-6, rng=None):
    """Compare an analytic gradient with central differences along one random direction.

    Parameters
    ----------
    f : callable, float64 array of ``x``'s shape -> scalar (e.g. ``lambda x: np.vdot(g, conv(x))``)
    x : float64 array, the point
    grad : the analytic gradient df/dx at ``x`` (same shape)
    eps : step
    rng : numpy Generator for the direction (default: seeded, so the check is reproducible)

    Returns
    -------
    (analytic, numeric) : ``vdot(grad, v)`` and ``(f(x + eps v) - f(x - eps v)) / (2 eps)`` for a
    standard-normal direction ``v``. Assert they agree to ~1e-6 relative; the central difference is
    exact for linear functions (convolutions), up to rounding of order ``1e-16 * |f| / eps``.
    """
    rng = np.random.default_rng(12345) if rng is None else rng
    x = np.asarray(x, dtype=np.float64)
    v = rng.standard_normal(x.shape)
    analytic = float(np.vdot(np.asarray(grad, dtype=np.float64), v))
    numeric = float((f(x + eps * v) - f(x - eps * v)) / (2 * eps))
    return analytic, numeric


def assert_gradcheck(f, point, grad, rng):
    """Assert :func:`directional_gradcheck` agrees to ``GRADCHECK_RTOL`` relative (``1e-9`` absolute).

    For the float64 kernel checks: ``f`` is linear in ``point`` (a convolution or pooling against a fixed
    upstream gradient), so the central difference is exact up to rounding.
    """
    analytic, numeric = directional_gradcheck(f, point, grad, rng=rng)
    assert numeric == pytest.approx(analytic, rel=GRADCHECK_RTOL, abs=1e-9)


def assert_vdot_equal(a1, b1, a2, b2):
    """``vdot(a1, b1) == vdot(a2, b2)`` up to rounding (bounded by ``|a|*|b|``, Cauchy-Schwarz).

    The adjoint identity of a linear map ``A``: ``vdot(A x, g) == vdot(x, A^T g)``; the tolerance is
    ``ADJOINT_RTOL`` times the sum of the two Cauchy-Schwarz bounds.
    """
    lhs, rhs = np.vdot(a1, b1), np.vdot(a2, b2)
    scale = np.linalg.norm(a1) * np.linalg.norm(b1) + np.linalg.norm(a2) * np.linalg.norm(b2)
    assert abs(lhs - rhs) <= ADJOINT_RTOL * scale, (lhs, rhs)


# ----------------------------------------------------------------------------------------------------
# Building test cases for the convolution kernels
# ----------------------------------------------------------------------------------------------------
def pair(value):
    """``(h, w)`` from an int or a pair, as the kernels accept stride / padding / dilation / kernel size."""
    return value if isinstance(value, tuple) else (value, value)


def label(value):
    """A short test-id fragment: ``"2"`` for ``2`` or ``(2, 2)``, ``"2x1"`` for ``(2, 1)``."""
    h, w = pair(value)
    return f"{h}" if h == w else f"{h}x{w}"


# ------------------------------------------------------------------ the convolution kernels' test grid
# Shared by tests/test_conv2d.py and tests/test_depthwise.py. Each axis's values are combined cyclically
# (not as a full product), so the grid stays near 240 cases and still holds every value of every axis
# (each file's test_grid_covers_every_value_of_every_axis checks that).
GRID_STRIDES = [1, 2, 3, (2, 1)]
GRID_PADDINGS = [0, 1, 2, (2, 1)]
GRID_DILATIONS = [1, 2, (1, 2)]
GRID_KERNELS = [(1, 1), (3, 3), (5, 5), (3, 5), (1, 3)]
GRID_BATCHES = [1, 3]
GRID_SIZES = [(7, 9), (8, 8), (6, 11)]
GRID_FALLBACK_SIZE = (11, 10)   # used when the cyclic size is smaller than the kernel's reach (5x5, dilation 2)


def build_conv_grid(channel_options, weight_of):
    """Cases ``(x shape, weight shape, params, with_bias)`` over strides x paddings x dilations x kernels.

    ``weight_of(channel_option, kernel) -> (C_in, weight_shape, groups, extra_params)`` turns one entry of
    ``channel_options`` into the weight (``extra_params`` are added to the kernel's keyword arguments,
    e.g. ``{"groups": 2}`` for conv2d, ``{}`` for depthwise, whose groups are its channels). The image
    grows to ``GRID_FALLBACK_SIZE`` when the output would be empty.
    """
    from kernels._validate import conv_geometry
    cases = []
    for i, (stride, padding, dilation, kernel) in enumerate(itertools.product(GRID_STRIDES, GRID_PADDINGS,
                                                                               GRID_DILATIONS, GRID_KERNELS)):
        C_in, weight_shape, groups, extra_params = weight_of(channel_options[i % len(channel_options)], kernel)
        params = dict(stride=stride, padding=padding, dilation=dilation, **extra_params)
        batch = GRID_BATCHES[(i // len(channel_options)) % len(GRID_BATCHES)]
        for H, W in (GRID_SIZES[i % len(GRID_SIZES)], GRID_FALLBACK_SIZE):
            try:
                conv_geometry((batch, C_in, H, W), weight_shape, **{**params, "groups": groups})
            except ValueError:
                continue
            cases.append(((batch, C_in, H, W), weight_shape, params, (i // 2) % 2 == 1))
            break
        else:
            raise AssertionError(f"no image size fits {weight_shape} {params}")
    return cases


def conv_grid_inputs(case, dtype, rng, groups):
    """x, weight, bias (or None), grad_out of the forward's output shape, params; all in ``dtype``."""
    from kernels._validate import conv_geometry
    x_shape, weight_shape, params, with_bias = case
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = rng.standard_normal(weight_shape[0]).astype(dtype) if with_bias else None
    output_shape = conv_geometry(x_shape, weight_shape, **{**params, "groups": groups}).output_shape
    grad_out = rng.standard_normal(output_shape).astype(dtype)
    return x, weight, bias, grad_out, params


def as64(*arrays):
    """The arrays cast to float64 (``None`` stays ``None``, e.g. a missing bias), as a list.

    The reference is computed in float64 from the *same* (possibly float32-rounded) inputs.
    """
    return [None if a is None else a.astype(np.float64) for a in arrays]


LAYOUTS = ["strided_rows", "channels_last_transpose", "fortran", "negative_strides"]


def relayout(array, layout):
    """A view with ``array``'s values in another memory layout (4-D NCHW arrays; 1-D for ``bias``).

    ``layout`` is one of ``LAYOUTS``; every 4-D result is non-C-contiguous, and a 1-D array always
    becomes a stride-2 view, whatever ``layout``. The values are unchanged, so a kernel must give the
    same result as for the contiguous original.
    """
    if array.ndim == 1:
        base = np.zeros(2 * array.shape[0], array.dtype)
        base[::2] = array
        return base[::2]                                                       # stride 2 elements
    if layout == "strided_rows":                                               # x[:, :, ::2]
        base = np.zeros(array.shape[:2] + (2 * array.shape[2], array.shape[3]), array.dtype)
        base[:, :, ::2] = array
        return base[:, :, ::2]
    if layout == "channels_last_transpose":                                    # np.transpose view of NHWC
        return np.transpose(np.ascontiguousarray(np.transpose(array, (0, 2, 3, 1))), (0, 3, 1, 2))
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "negative_strides":
        return np.ascontiguousarray(array[:, :, ::-1, ::-1])[:, :, ::-1, ::-1]
    raise ValueError(layout)


# ----------------------------------------------------------------------------------------------------
# Committed fixture files (tests/fixtures/*.npz)
# ----------------------------------------------------------------------------------------------------
def load_fixture_with_configs(path):
    """All arrays of the ``.npz`` fixture at ``path`` as a dict, its ``configs_json`` entry decoded into
    ``configs``; skips the calling test when the file is missing (``python tools/make_fixtures.py``)."""
    if not path.exists():
        pytest.skip(f"{path} missing: run python tools/make_fixtures.py")
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["configs"] = json.loads(str(arrays.pop("configs_json")))
    return arrays


def assert_fixture_file_matches(path, fixtures, ignore=()):
    """The freshly generated ``.npz`` at ``path`` has the same keys as ``fixtures`` (the committed file,
    as a dict) and the same values: floats to ``rtol = atol = 1e-12`` (the generator re-run in float64,
    possibly with another BLAS), everything else exactly; ``meta/*`` entries (versions) and the keys in
    ``ignore`` are not compared. PyTorch's measured float32 errors (``.../torch_float32_error``) change with
    the CPU and with PyTorch's thread count (its float32 reductions split differently): only the
    quantities they name are compared, and that each is a finite non-negative number."""
    with np.load(path) as fresh:
        assert sorted(fresh.files) == sorted(fixtures)
        for key in fresh.files:
            if key.startswith("meta/") or key in ignore:
                continue
            if key.endswith("/torch_float32_error"):                # a JSON dict {quantity: error}
                errors, committed = json.loads(str(fresh[key])), json.loads(str(fixtures[key]))
                assert sorted(errors) == sorted(committed), key
                assert all(math.isfinite(value) and value >= 0 for value in errors.values()), key
                continue
            if fresh[key].dtype.kind == "f":
                np.testing.assert_allclose(fresh[key], fixtures[key], rtol=1e-12, atol=1e-12, err_msg=key)
            else:
                np.testing.assert_array_equal(fresh[key], fixtures[key], err_msg=key)


def assert_generator_reproduces_fixture(name, out_dir, fixtures):
    """Run ``tools/fixtures_<name>.py``'s ``generate(out_dir)`` again and compare with ``fixtures`` (the
    committed file as a dict, with its ``configs_json``): arrays as :func:`assert_fixture_file_matches`;
    the configurations exactly, except the measured ``torch_float32_error`` entries, which depend on the CPU.

    Skips the calling test when PyTorch is not installed (the generators need it)."""
    pytest.importorskip("torch")
    tools = pathlib.Path(__file__).resolve().parents[1] / "tools"
    sys.path.insert(0, str(tools))
    try:
        import make_fixtures
        [path] = make_fixtures.load_module(name, tools / f"fixtures_{name}.py").generate(out_dir)
    finally:
        sys.path.remove(str(tools))
    assert_fixture_file_matches(path, fixtures, ignore=("configs_json",))

    def without_measurements(configs_json):
        return {case: {key: value for key, value in config.items() if key != "torch_float32_error"}
                for case, config in json.loads(str(configs_json)).items()}

    with np.load(path) as fresh:
        assert without_measurements(fresh["configs_json"]) == without_measurements(fixtures["configs_json"])


# ----------------------------------------------------------------------------------------------------
# Layers and blocks (tinycnn.nn): float64 gradient checks of the input and every parameter
# ----------------------------------------------------------------------------------------------------
def assert_directional_derivatives_match(loss, point, grad, what):
    """Relative agreement to GRADCHECK_RTOL, plus an absolute allowance for the rounding of the central
    difference itself, ~1e-16 * |L| / eps = 1e-10 |L| (matters when the true derivative is 0, e.g. the
    bias of a convolution followed by a training-mode batch norm)."""
    analytic, numeric = directional_gradcheck(loss, point, grad)
    rounding = 1e-8 * max(1.0, abs(float(loss(point))))
    assert abs(analytic - numeric) <= GRADCHECK_RTOL * max(abs(numeric), abs(analytic)) + rounding, (
        f"{what}: analytic {analytic!r} vs numeric {numeric!r}")


def randomise_batch_norms(layer, rng):
    """Random BN affine parameters and running statistics.

    With the defaults (weight 1, bias 0, mean 0, var 1) evaluation mode is almost the identity, and a
    channel whose input is exactly 0 (e.g. a depthwise convolution over a patch that a ReLU zeroed) stays
    exactly 0 -- on the kink of a following ReLU6, where a central difference is meaningless.
    """
    # imported here, not at the top: conftest.py imports helpers for every test, most never need tinycnn.nn
    from tinycnn import nn

    for module in layer.modules():
        if isinstance(module, nn.BatchNorm2d) and module.affine:
            C = module.num_features
            module.weight.data = 0.5 + rng.random(C)
            module.bias.data = 0.2 * rng.standard_normal(C) + 0.1
            module.running_mean = 0.1 * rng.standard_normal(C)
            module.running_var = 0.5 + rng.random(C)


def gradcheck_layer(layer, x_shape, mode, seed=0, before_forward=lambda layer: None):
    """Check dL/dx and every dL/dparam of ``layer`` (converted to float64) by central differences."""
    rng = np.random.default_rng(seed)
    layer.double().train(mode == "train")
    randomise_batch_norms(layer, rng)
    x = rng.standard_normal(x_shape)
    before_forward(layer)
    y = layer(x)
    g = rng.standard_normal(y.shape)
    layer.zero_grad()
    grad_x = layer.backward(g)
    assert grad_x.shape == x.shape and grad_x.dtype == np.float64

    def loss_of_x(point):
        before_forward(layer)
        return np.vdot(g, layer(point))

    assert_directional_derivatives_match(loss_of_x, x, grad_x, "input")
    for name, parameter in layer.named_parameters():
        original = parameter.data

        def loss_of_parameter(value, parameter=parameter):
            parameter.data = value
            before_forward(layer)
            return np.vdot(g, layer(x))

        assert_directional_derivatives_match(loss_of_parameter, original, parameter.grad, name)
        parameter.data = original


# ------------------------------------------------------------------------------------ small data files
# IDX (MNIST) files, CIFAR-10 batches and images, written by the data-loader and command-line tests.
def idx_bytes(array, type_code=0x08):
    """The IDX encoding of ``array``: 0, 0, type, ndim, big-endian uint32 sizes, big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array).astype(dtype).tobytes()


def write(path, data, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def mnist_arrays(count, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), rng.integers(0, 10, count).astype(np.uint8)


def write_mnist(folder, split, count, seed=0, gz=False, dotted=False):
    """Write ``split``'s two IDX files under their standard names; return the arrays written."""
    prefix = "train" if split == "train" else "t10k"
    images, labels = mnist_arrays(count, seed)
    names = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    if dotted:
        names = [name.replace("-idx", ".idx") for name in names]
    suffix = ".gz" if gz else ""
    write(folder / (names[0] + suffix), idx_bytes(images), gz)
    write(folder / (names[1] + suffix), idx_bytes(labels), gz)
    return images, labels


def save_image(path, array, mode=None, format=None):
    """``array`` (H, W) or (H, W, C) uint8 -> an image file via Pillow."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path, format=format)
    return path


def solid(height, width, colour):
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (height, width, len(colour))).copy()


class Python2StylePickler(pickle._Pickler):
    """Pickles like the Python 2 that wrote the real CIFAR-10 batches: ``bytes`` as Python 2 ``str``
    opcodes (BINSTRING) and NumPy's globals under their NumPy 1 names (``numpy.core.multiarray``)."""

    dispatch = dict(pickle._Pickler.dispatch)  # noqa: RUF012  (pickle's own class-level table)

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[type] = save_global


def python2_style_pickle(obj):
    buffer = io.BytesIO()
    Python2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_batch(count, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 3072), dtype=np.uint8), rng.integers(0, 10, count).tolist()


def write_cifar(folder, count=4, str_keys=False, meta_names=None):
    """Five training batches and a test batch of ``count`` images each, pickled like the originals
    (bytes keys, Python 2 style) or, with ``str_keys``, as re-pickled by Python 3."""
    folder.mkdir(parents=True, exist_ok=True)
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    dumps = (lambda obj: pickle.dumps(obj, protocol=4)) if str_keys else python2_style_pickle
    written = {}
    for seed, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data, labels = cifar_batch(count, seed)
        batch = {key("batch_label"): b"x", key("data"): data, key("labels"): labels,
                 key("filenames"): [b"f"] * count}
        (folder / name).write_bytes(dumps(batch))
        written[name] = (data, labels)
    if meta_names is not None:
        meta = {key("label_names"): [n.encode() for n in meta_names], key("num_vis"): 3072}
        (folder / "batches.meta").write_bytes(dumps(meta))
    return written
