"""Plots for learning: what a network costs, and what a training run learnt.

What a network costs (from :func:`tinycnn.profile`):

* :func:`plot_macs_vs_params` -- one point per model: parameters (memory) against MACs (arithmetic).
  The two are different budgets: SqueezeNet has few parameters and many MACs, MobileNet V1's
  classifier holds a quarter of its parameters and almost none of its MACs.
* :func:`plot_macs_vs_time` -- MACs against measured time: the points do not lie on one line, because
  time also depends on memory traffic and on how well each layer kind is implemented (ShuffleNet V2's
  guidelines, arXiv:1807.11164).
* :func:`plot_layer_macs` -- one bar per layer, coloured by kind: where a network spends its MACs
  (MobileNet V1: 95% in the 1x1 convolutions, its Table 2).
* :func:`plot_zoo` -- the first two for the whole model zoo in one figure.

These take an optional ``ax`` and return the axes they drew on, so they compose in notebooks
(matplotlib is imported inside the functions; nothing calls ``plt.show()``).

What a training run learnt (:func:`write_report` makes them all for ``tinycnn train``):

* :func:`plot_history` -- loss and accuracy per epoch, training and validation. A validation loss that
  rises while the training loss falls is over-fitting.
* :func:`plot_confusion_matrix` -- which classes are mistaken for which (rows: true class).
* :func:`plot_filters` -- the first convolution's kernels as small RGB images: after training they
  become edge, colour and stripe detectors (Zeiler & Fergus, arXiv:1311.2901).
* :func:`plot_feature_maps` -- one image and the channels a chosen layer computes from it.
* :func:`plot_grad_cam` -- a photo with the Grad-CAM heat map of :func:`tinycnn.explain.grad_cam` laid
  over it (and the saliency map beside it): where the evidence for a class lies.
* :func:`plot_embedding` -- the penultimate features (what the classifier sees) projected to 2-D by
  :func:`pca` or :func:`tsne`: well-trained features form one cluster per class. A t-SNE of a
  MobileNetV2's features is the usual picture of what it learnt; both projections here are plain NumPy.

These return a whole ``matplotlib.figure.Figure``, made without pyplot, so a training script does not
change the notebook's or the script's matplotlib backend (Jupyter shows a returned figure once
``%matplotlib inline`` has run); :func:`save_figure` writes one as a PNG with the Agg renderer.
"""
import numbers
import pathlib

import numpy as np

from .evaluate import confusion_matrix

__all__ = ["plot_macs_vs_params", "plot_macs_vs_time", "plot_layer_macs", "plot_zoo", "KIND_COLORS",
           "pca", "tsne", "plot_history", "plot_confusion_matrix", "plot_filters", "plot_feature_maps",
           "plot_embedding", "save_figure", "first_conv_weight", "default_feature_layer", "capture_output",
           "write_report", "conv_weight", "plot_grad_cam"]

# One colour per layer kind (``LayerStats.kind``); kinds not listed get grey.
KIND_COLORS = {
    "conv 1x1": "tab:blue",
    "group conv 1x1": "tab:cyan",
    "depthwise": "tab:orange",
    "conv": "tab:green",
    "group conv": "tab:olive",
    "transposed conv": "tab:pink",
    "fc": "tab:red",
}


def _kind_color(kind):
    """``KIND_COLORS`` entry for ``kind``: exact match first, then the kind without its kernel size."""
    if kind in KIND_COLORS:
        return KIND_COLORS[kind]
    family = kind.rsplit(" ", 1)[0] if kind[-1].isdigit() else kind     # "depthwise 3x3" -> "depthwise"
    return KIND_COLORS.get(family, "tab:gray")


def _axes(ax, figsize=(6, 4.5)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt
    _, ax = plt.subplots(figsize=figsize)
    return ax


def _log_axes(ax):
    """Logarithmic axes labelled with plain numbers (1, 10, 100) and no minor labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())


def _check_profiles(profiles):
    from .profile import Profile
    if not isinstance(profiles, dict) or not profiles:
        raise TypeError("profiles must be a non-empty dict {model name: Profile} (e.g. from tinycnn.profile_zoo())")
    for name, value in profiles.items():
        if not isinstance(value, Profile):
            raise TypeError(f"profiles[{name!r}] must be a Profile; got {type(value).__name__}")
    return profiles


def plot_macs_vs_params(profiles, ax=None, annotate=True, log=True):
    """Scatter: parameters (x, millions) against MACs (y, millions), one labelled point per model.

    Parameters
    ----------
    profiles : dict {name: Profile}
        E.g. ``tinycnn.profile.profile_zoo(224)``.
    ax : matplotlib Axes, optional
    annotate : bool
        Write each model's name next to its point.
    log : bool
        Logarithmic axes (the zoo spans 40M to 4G MACs).

    Returns
    -------
    matplotlib Axes
    """
    profiles = _check_profiles(profiles)
    ax = _axes(ax)
    names = list(profiles)
    params = [profiles[n].params / 1e6 for n in names]
    macs = [profiles[n].macs / 1e6 for n in names]
    ax.scatter(params, macs, color="tab:blue", zorder=3)
    if annotate:
        for name, x, y in zip(names, params, macs):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if log:
        _log_axes(ax)
    resolution = {p.input_shape[2:] for p in profiles.values()}
    where = f" at {'x'.join(map(str, resolution.pop()))}" if len(resolution) == 1 else ""
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("MACs (millions)")
    ax.set_title(f"Arithmetic vs size{where}")
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_macs_vs_time(profiles, times, ax=None, annotate=True, log=True):
    """Scatter: MACs (x, millions) against measured forward time (y, milliseconds), one point per model.

    Parameters
    ----------
    profiles : dict {name: Profile}
    times : dict {name: seconds}
        E.g. ``{n: tinycnn.profile.time_forward(model, (1, 3, 224, 224)) ...}``; models missing from
        ``times`` are skipped.
    ax, annotate, log
        As :func:`plot_macs_vs_params`.

    Returns
    -------
    matplotlib Axes
    """
    profiles = _check_profiles(profiles)
    if not isinstance(times, dict):
        raise TypeError(f"times must be a dict {{model name: seconds}}; got {type(times).__name__}")
    names = [n for n in profiles if n in times]
    if not names:
        raise ValueError(f"times has no entry for any of the profiled models {sorted(profiles)}")
    for name in names:
        if isinstance(times[name], bool) or not isinstance(times[name], numbers.Real) or not times[name] > 0:
            raise ValueError(f"times[{name!r}] must be a positive number of seconds; got {times[name]!r}")
    ax = _axes(ax)
    macs = [profiles[n].macs / 1e6 for n in names]
    milliseconds = [1e3 * times[n] for n in names]
    ax.scatter(macs, milliseconds, color="tab:orange", zorder=3)
    if annotate:
        for name, x, y in zip(names, macs, milliseconds):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if log:
        _log_axes(ax)
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("forward time (ms)")
    ax.set_title("Arithmetic vs measured time")
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_layer_macs(profile, ax=None, min_percent=0.0, figsize=(10, 4)):
    """Bar chart of each layer's MACs in execution order, coloured by kind (legend: kind and its share).

    Parameters
    ----------
    profile : Profile
    ax : matplotlib Axes, optional
    min_percent : float
        Leave out layers with less than this percentage of the model's MACs (0: every layer with MACs).
    figsize : (float, float)
        Size of a new figure when ``ax`` is None.

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.patches import Patch

    from .profile import Profile
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a Profile (from tinycnn.profile); got {type(profile).__name__}")
    if isinstance(min_percent, bool) or not isinstance(min_percent, numbers.Real) or not 0 <= min_percent < 100:
        raise ValueError(f"min_percent must be a number in [0, 100); got {min_percent!r}")
    total = profile.macs
    rows = [r for r in profile.rows if r.macs > 0 and 100.0 * r.macs / total >= min_percent]
    ax = _axes(ax, figsize)
    colors = [_kind_color(r.kind) for r in rows]
    ax.bar(range(len(rows)), [r.macs / 1e6 for r in rows], color=colors, width=0.8)
    ax.set_xlim(-1, max(len(rows), 1))
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.name for r in rows], rotation=90, fontsize=5)
    ax.set_ylabel("MACs (millions)")
    ax.set_title(f"{profile.model_name}: MACs per layer ({total / 1e6:.1f}M in total)")
    shares = {t.kind: t.macs_percent for t in profile.by_kind() if t.macs > 0}
    handles = [Patch(color=_kind_color(kind), label=f"{kind} ({share:.1f}%)") for kind, share in shares.items()]
    ax.legend(handles=handles, fontsize=7)
    return ax


def plot_zoo(resolution=224, names=None, measure_time=False, repeat=3):
    """One figure for the whole zoo: MACs vs parameters, and (``measure_time=True``) MACs vs time.

    Parameters
    ----------
    resolution : int
        Input ``(1, 3, resolution, resolution)``.
    names : list of str, optional
        Models to include (default: ``tinycnn.models.list_models()``).
    measure_time : bool
        Also time each model's forward pass with :func:`tinycnn.profile.time_forward` (slow: every
        model runs ``repeat + 1`` times; the first run compiles the kernels).
    repeat : int

    Returns
    -------
    (figure, profiles, times) : times is ``{}`` unless ``measure_time``.
    """
    import matplotlib.pyplot as plt

    from . import models
    from .profile import profile_zoo, time_forward
    profiles = profile_zoo(resolution, names)
    times = {}
    if measure_time:
        for name in profiles:
            times[name] = time_forward(models.get_model(name), (1, 3, resolution, resolution), repeat=repeat)
    columns = 2 if measure_time else 1
    figure, axes = plt.subplots(1, columns, figsize=(6.5 * columns, 5), squeeze=False)
    plot_macs_vs_params(profiles, ax=axes[0][0])
    if measure_time:
        plot_macs_vs_time(profiles, times, ax=axes[0][1])
    figure.tight_layout()
    return figure, profiles, times


# ==================================================================================================
# What a training run learnt
# ==================================================================================================
TSNE_MIN_POINTS = 6          # perplexity (N - 2) / 3 must exceed 1
DPI = 100                    # PNG resolution; the figure sizes below keep each file small


def _figure(figsize):
    from matplotlib.figure import Figure
    return Figure(figsize=figsize, layout="constrained")


def save_figure(figure, path, dpi=DPI):
    """Write ``figure`` to ``path`` as a PNG (Agg renderer); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = pathlib.Path(path)
    FigureCanvasAgg(figure)                  # attach an Agg canvas: savefig needs no pyplot
    figure.savefig(path, dpi=dpi, format="png")
    return path


def _class_colours(count):
    from matplotlib import colormaps
    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(count)]


# ----------------------------------------------------------------------------------------------------
# 2-D projections
# ----------------------------------------------------------------------------------------------------
def _check_features(features, name="features"):
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] < 2 or not np.issubdtype(features.dtype, np.number):
        raise ValueError(f"{name} must be a numeric (N, D) array with N >= 2; got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return features.astype(np.float64)


def pca(features, n_components=2):
    """Principal component analysis by SVD.

    Parameters
    ----------
    features : (N, D)
    n_components : int <= min(N, D)

    Returns
    -------
    projected : (N, n_components) float64 -- ``(X - mean) @ V[:, :n]``, columns in decreasing variance
    explained : (n_components,) float64 -- share of the total variance each component carries

    With ``X - mean = U S V^T``, the principal directions are the columns of ``V`` and component ``k``
    has variance ``S_k^2 / (N - 1)``. Each direction's sign is fixed so that its largest entry is
    positive (SVD leaves it arbitrary), so the picture does not flip between runs.
    """
    x = _check_features(features)
    N, D = x.shape
    if isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral) \
            or not 1 <= n_components <= min(N, D):
        raise ValueError(f"n_components must be an int in [1, min(N, D) = {min(N, D)}]; got {n_components!r}")
    centred = x - x.mean(axis=0)                                        # (N, D)
    _, singular_values, vt = np.linalg.svd(centred, full_matrices=False)   # vt (min(N, D), D)
    directions = vt[:n_components]                                      # (n, D)
    largest = np.argmax(np.abs(directions), axis=1)
    directions = directions * np.sign(directions[np.arange(n_components), largest])[:, None]
    variance = singular_values ** 2
    explained = variance[:n_components] / max(variance.sum(), np.finfo(float).tiny)
    return centred @ directions.T, explained                            # (N, n)


def _conditional_probabilities(squared_distances, perplexity, tolerance=1e-5, max_steps=64):
    """Row-wise Gaussian affinities whose entropy is ``log(perplexity)``, by bisection on the precision.

    ``p_{j|i} = exp(-beta_i d_ij^2) / sum_k exp(-beta_i d_ik^2)``; all rows are bisected at once.
    """
    N = squared_distances.shape[0]
    target = np.log(perplexity)
    beta = np.ones(N)
    low, high = np.zeros(N), np.full(N, np.inf)
    d = squared_distances.copy()
    np.fill_diagonal(d, np.inf)                                          # a point is not its own neighbour
    d -= d.min(axis=1, keepdims=True)                                    # stable: exp(0) = 1 in each row
    d_finite = np.where(np.isinf(d), 0.0, d)                             # for the entropy: 0 * inf is NaN
    for _ in range(max_steps):
        p = np.exp(-d * beta[:, None])                                   # (N, N)
        total = p.sum(axis=1)
        p /= total[:, None]
        entropy = np.log(total) + beta * (d_finite * p).sum(axis=1)             # H(P_i) in nats
        difference = entropy - target
        if np.all(np.abs(difference) < tolerance):
            break
        too_flat = difference > 0                                        # entropy too high: sharpen
        low = np.where(too_flat, beta, low)
        high = np.where(too_flat, high, beta)
        beta = np.where(np.isinf(high), beta * 2, (low + high) / 2)
    return p


def tsne(features, n_components=2, perplexity=30.0, iterations=750, seed=0, learning_rate="auto"):
    """t-SNE (van der Maaten & Hinton, JMLR 2008) in NumPy: exact gradients, O(N^2) memory and time.

    Parameters
    ----------
    features : (N, D); a few thousand points at most (the N x N matrices dominate)
    n_components : int, dimension of the embedding (2 for a plot)
    perplexity : float in (1, N - 1), the effective number of neighbours each point keeps
    iterations : int >= 250 (the first 250 use early exaggeration)
    seed : int, for the initial positions
    learning_rate : float or "auto" (``max(N / 48, 50)``, Belkina et al. 2019, as scikit-learn)

    Returns
    -------
    (N, n_components) float64

    The method: Gaussian affinities ``p_ij`` in feature space (each point's bandwidth set by bisection so
    that its neighbourhood has the given perplexity, then symmetrised), Student-t affinities
    ``q_ij ~ (1 + |y_i - y_j|^2)^-1`` in the plane, and gradient descent on ``KL(P || Q)`` with
    ``dC/dy_i = 4 sum_j (p_ij - q_ij)(y_i - y_j)(1 + |y_i - y_j|^2)^-1``; momentum 0.5 then 0.8,
    per-coordinate adaptive gains, and P multiplied by 12 for the first 250 steps (early exaggeration)
    so that clusters form before they settle. Features are first reduced to 50 dimensions by :func:`pca`.
    """
    x = _check_features(features)
    N = x.shape[0]
    if not 1 < perplexity < N - 1:
        raise ValueError(f"perplexity must be in (1, N - 1) = (1, {N - 1}); got {perplexity!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 250:
        raise ValueError(f"iterations must be an int >= 250; got {iterations!r}")
    if x.shape[1] > 50:
        x, _ = pca(x, min(50, N))                                        # (N, 50): faster, less noise
    squared = np.square(x).sum(axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0.0)   # (N, N)
    p = _conditional_probabilities(distances, perplexity)
    p = (p + p.T) / (2 * N)                                              # joint, symmetric, sums to 1
    p = np.maximum(p, 1e-12)
    rate = max(N / 48.0, 50.0) if learning_rate == "auto" else float(learning_rate)

    rng = np.random.default_rng(seed)
    y = 1e-4 * rng.standard_normal((N, n_components))                   # (N, 2)
    velocity = np.zeros_like(y)
    gains = np.ones_like(y)
    exaggeration_steps = 250
    for step in range(iterations):
        exaggeration = 12.0 if step < exaggeration_steps else 1.0
        momentum = 0.5 if step < exaggeration_steps else 0.8
        sq = np.square(y).sum(axis=1)
        kernel = 1.0 / (1.0 + np.maximum(sq[:, None] + sq[None, :] - 2 * y @ y.T, 0.0))   # (N, N)
        np.fill_diagonal(kernel, 0.0)
        q = np.maximum(kernel / kernel.sum(), 1e-12)
        weights = (exaggeration * p - q) * kernel                        # (N, N)
        gradient = 4.0 * (weights.sum(axis=1)[:, None] * y - weights @ y)   # (N, 2)
        same_sign = np.sign(gradient) == np.sign(velocity)
        gains = np.maximum(np.where(same_sign, gains * 0.8, gains + 0.2), 0.01)
        velocity = momentum * velocity - rate * gains * gradient
        y = y + velocity
        y -= y.mean(axis=0)
    return y


_tsne = tsne          # write_report's argument `tsne` (a flag) hides the function's name


# ----------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------
def plot_history(history, figsize=(8, 3.2), title=None):
    """Loss (left) and accuracy (right) per epoch, training and validation.

    ``history`` is :attr:`tinycnn.train.Trainer.history` or the list in ``history.json``: dicts with
    ``epoch``, ``train_loss``, ``train_accuracy`` and (optionally) ``val_loss``, ``val_accuracy``.
    """
    if not history:
        raise ValueError("history is empty: train at least one epoch")
    epochs = [row["epoch"] for row in history]
    figure = _figure(figsize)
    loss_ax, accuracy_ax = figure.subplots(1, 2)
    for ax, metric, label in ((loss_ax, "loss", "cross-entropy loss"), (accuracy_ax, "accuracy", "accuracy (%)")):
        scale = 100 if metric == "accuracy" else 1
        ax.plot(epochs, [scale * row[f"train_{metric}"] for row in history], "o-", label="train", markersize=4)
        if all(row.get(f"val_{metric}") is not None for row in history):
            ax.plot(epochs, [scale * row[f"val_{metric}"] for row in history], "s-", label="validation",
                    markersize=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs if len(epochs) <= 12 else epochs[::max(1, len(epochs) // 10)])
    accuracy_ax.legend(loc="lower right")
    loss_ax.legend(loc="upper right")
    if title:
        figure.suptitle(title)
    return figure


def plot_confusion_matrix(matrix, class_names, figsize=None, title=None):
    """The ``(K, K)`` confusion matrix (rows: true class, columns: predicted) with counts in the cells.

    Colours show each row as a fraction of its class, so rare classes are as visible as common ones.
    """
    matrix = np.asarray(matrix)
    K = len(class_names)
    if matrix.shape != (K, K):
        raise ValueError(f"matrix must be ({K}, {K}) for {K} class names; got {matrix.shape}")
    figure = _figure(figsize or (max(3.2, 0.42 * K + 2.2), max(3.0, 0.42 * K + 1.8)))
    ax = figure.subplots()
    row_fraction = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(row_fraction, cmap="Blues", vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7 if K > 6 else 9,
                        color="white" if row_fraction[i, j] > 0.5 else "black")
    ax.set_xticks(range(K), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(K), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(title or f"validation accuracy {100 * accuracy:.1f}%", fontsize=10)
    return figure


def first_conv_weight(model):
    """``(name, weight)`` of the model's first ``Conv2d`` (C_out, C_in, kH, kW), a copy."""
    from . import nn
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module.weight.data.copy()
    raise ValueError(f"{type(model).__name__} has no Conv2d layer")


def conv_weight(model, layer_name):
    """``weight`` of the ``Conv2d`` called ``layer_name`` in ``model`` (C_out, C_in/groups, kH, kW), a copy."""
    from . import nn
    try:
        layer = model.get_submodule(layer_name)
    except AttributeError:
        convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
        raise ValueError(f"no layer {layer_name!r} in {type(model).__name__}; its convolutions include "
                         f"{', '.join(convs[:6])}, ...") from None
    if not isinstance(layer, nn.Conv2d):
        raise ValueError(f"layer {layer_name!r} is a {type(layer).__name__}, not a Conv2d: it has no filters")
    return layer.weight.data.copy()


def plot_filters(weight, columns=8, title=None, cell=0.55, layer_name=None, max_filters=64):
    """The kernels of a convolution, one small image per output channel.

    ``weight`` is (C_out, C_in, kH, kW), or a model: then the convolution called ``layer_name``
    (any ``Conv2d`` of ``model.named_modules()``; default its first convolution). With 3 input channels
    each kernel is shown in colour, its values scaled to [0, 1] per kernel (so the pattern, not the size,
    is visible); otherwise each kernel's channel mean is shown in grey (a depthwise kernel as it is).
    At most ``max_filters`` kernels are drawn (the first ones).
    """
    name = None
    if hasattr(weight, "named_modules"):
        if layer_name is None:
            name, weight = first_conv_weight(weight)
        else:
            name, weight = layer_name, conv_weight(weight, layer_name)
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D (C_out, C_in, kH, kW); got shape {weight.shape}")
    total_out = weight.shape[0]
    weight = weight[:max_filters]
    C_out, C_in = weight.shape[:2]
    columns = min(columns, C_out)
    rows = -(-C_out // columns)
    figure = _figure((cell * columns + 0.2, cell * rows + 0.45))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for index, ax in enumerate(axes):
        ax.set_axis_off()
        if index >= C_out:
            continue
        kernel = weight[index]                                          # (C_in, kH, kW)
        kernel = (kernel - kernel.min()) / max(kernel.max() - kernel.min(), 1e-12)
        if C_in == 3:
            ax.imshow(kernel.transpose(1, 2, 0), interpolation="nearest")  # (kH, kW, 3) RGB
        else:
            ax.imshow(kernel.mean(axis=0), cmap="gray", interpolation="nearest")
    what = "first-layer filters" if layer_name is None else "filters"
    shown = f"{C_out} of {total_out}" if C_out < total_out else f"{C_out}"
    figure.suptitle(title or f"{what}{f' ({name})' if name else ''}: {shown} x {C_in} x "
                    f"{weight.shape[2]} x {weight.shape[3]}", fontsize=9)
    return figure


def capture_output(model, layer_name, x):
    """Run ``model(x)`` in evaluation mode and return the output of the sub-module ``layer_name``.

    A forward hook records it (removed afterwards). ``x`` is a (N, C, H, W) float32 batch.
    """
    try:
        layer = model.get_submodule(layer_name)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        raise ValueError(f"no layer {layer_name!r} in {type(model).__name__}; layers include "
                         f"{', '.join(names[:12])}, ...") from None
    captured = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(np.array(output)))
    try:
        model.eval()
        model(x)
    finally:
        handle.remove()
    return captured[0]


def default_feature_layer(model, input_shape):
    """The deepest ``Conv2d`` whose output is still at least a quarter of the input's height.

    For MobileNet V2 at 32 x 32 that is a convolution of the second stage (8 x 8 maps): deep enough to
    show learnt patterns, large enough to see them.
    """
    from . import nn
    sizes, handles = {}, []

    def record_height(name):
        def hook(module, inputs, output):       # returns None: the output is left unchanged
            sizes[name] = output.shape[-2]
        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(record_height(name)))
    try:
        model.eval()
        model(np.zeros((1,) + tuple(input_shape[-3:]), dtype=np.float32))
    finally:
        for handle in handles:
            handle.remove()
    large_enough = [name for name, height in sizes.items() if height >= input_shape[-2] / 4]
    if not large_enough:
        raise ValueError(f"{type(model).__name__} has no convolution whose output is a quarter of the input")
    return large_enough[-1]


def _displayable(image):
    """(C, H, W) uint8 or float -> (H, W, 3) or (H, W) float in [0, 1] for imshow."""
    image = np.asarray(image)
    image = image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
    image = np.clip(image, 0, 1)
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def plot_feature_maps(model, image, layer_name=None, normalize=None, channels=16, columns=8, title=None):
    """One input image and the first ``channels`` feature maps a layer computes from it.

    Parameters
    ----------
    model : Module
    image : (C, H, W) uint8 or float in [0, 1], as stored in a dataset
    layer_name : dotted name of a sub-module (``model.named_modules()``); default
        :func:`default_feature_layer`
    normalize : callable(x) applied to the (1, C, H, W) float32 batch before the model (the training
        normalisation), optional
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W); got shape {image.shape}")
    x = image[None].astype(np.float32)                                   # (1, C, H, W)
    if image.dtype == np.uint8:
        x /= 255.0
    if normalize is not None:
        x = np.ascontiguousarray(normalize(x), dtype=np.float32)
    layer_name = layer_name or default_feature_layer(model, x.shape)
    maps = capture_output(model, layer_name, x)
    if maps.ndim != 4:
        raise ValueError(f"layer {layer_name!r} outputs shape {maps.shape}, not (N, C, H, W) feature maps")
    total_channels = maps.shape[1]
    maps = maps[0, :channels]                                           # (c, h, w) of the first image
    shown = len(maps)
    columns = min(columns, shown)
    rows = -(-shown // columns)
    figure = _figure((1.0 * (columns + 2) + 0.2, 1.0 * rows + 0.5))
    grid = figure.add_gridspec(rows, columns + 2)
    ax = figure.add_subplot(grid[:, :2])
    ax.imshow(_displayable(image), cmap="gray" if image.shape[0] == 1 else None)
    ax.set_title("input", fontsize=8)
    ax.set_axis_off()
    for index in range(rows * columns):
        ax = figure.add_subplot(grid[index // columns, 2 + index % columns])
        ax.set_axis_off()
        if index < shown:
            ax.imshow(maps[index], cmap="viridis", interpolation="nearest")
    figure.suptitle(title or f"feature maps of {layer_name}: {shown} of {total_channels} channels, "
                    f"{maps.shape[1]} x {maps.shape[2]}", fontsize=9)
    return figure


def plot_embedding(points, labels, class_names, method="PCA", explained=None, figsize=(5.2, 4.2),
                   title=None):
    """Scatter of 2-D points (from :func:`pca` or :func:`tsne`), one colour per class."""
    points, labels = np.asarray(points), np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or labels.shape != (len(points),):
        raise ValueError(f"points must be (N, 2) and labels (N,); got {points.shape} and {labels.shape}")
    figure = _figure(figsize)
    ax = figure.subplots()
    colours = _class_colours(len(class_names))
    for k, name in enumerate(class_names):
        chosen = labels == k
        if np.any(chosen):
            ax.scatter(points[chosen, 0], points[chosen, 1], s=6, color=colours[k], label=name, alpha=0.8,
                       linewidths=0)
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if explained is not None:
        ax.set_xlabel(f"component 1 ({100 * explained[0]:.0f}% of the variance)")
        ax.set_ylabel(f"component 2 ({100 * explained[1]:.0f}%)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{method} of the penultimate features", fontsize=10)
    return figure


# ----------------------------------------------------------------------------------------------------
# Everything for one run
# ----------------------------------------------------------------------------------------------------
def write_report(out_dir, history, model, evaluation, class_names, sample_image=None, normalize=None,
                 tsne=True, feature_layer=None, max_points=1000, seed=0):
    """Write the run's PNGs into ``out_dir``; return their paths.

    ``curves.png`` (from ``history``), and when ``evaluation`` (a :class:`tinycnn.evaluate.Evaluation` with
    features) is given: ``confusion_matrix.png``, ``embedding_pca.png`` and, with ``tsne=True``,
    ``embedding_tsne.png`` (at most ``max_points`` images, a seeded subset; ~5 s for 1000 on two cores;
    left out below :data:`TSNE_MIN_POINTS` images, too few for a neighbourhood); ``filters.png`` (first
    convolution); ``feature_maps.png`` for ``sample_image`` (C, H, W) at ``feature_layer``.

    PCA keeps the directions of largest variance, which one class with large activations can dominate
    (MobileNet V2 on shapes: 80% of the variance along the horizontal-stripes images); t-SNE keeps
    neighbourhoods and shows the clusters of every class.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [save_figure(plot_history(history), out_dir / "curves.png")]
    if evaluation is not None:
        matrix = confusion_matrix(evaluation.labels, evaluation.predictions, len(class_names))
        written.append(save_figure(plot_confusion_matrix(matrix, class_names), out_dir / "confusion_matrix.png"))
    written.append(save_figure(plot_filters(model), out_dir / "filters.png"))
    if sample_image is not None:
        figure = plot_feature_maps(model, sample_image, feature_layer, normalize=normalize)
        written.append(save_figure(figure, out_dir / "feature_maps.png"))
    if evaluation is not None and evaluation.features is not None and len(evaluation.labels) >= 2:
        features, labels = evaluation.features, evaluation.labels
        if len(labels) > max_points:
            keep = np.sort(np.random.default_rng(seed).choice(len(labels), max_points, replace=False))
            features, labels = features[keep], labels[keep]
        points, explained = pca(features, 2)
        figure = plot_embedding(points, labels, class_names, "PCA", explained)
        written.append(save_figure(figure, out_dir / "embedding_pca.png"))
        if tsne and len(labels) >= TSNE_MIN_POINTS:
            points = _tsne(features, perplexity=min(30.0, (len(labels) - 2) / 3), seed=seed)
            figure = plot_embedding(points, labels, class_names, "t-SNE")
            written.append(save_figure(figure, out_dir / "embedding_tsne.png"))
    return written


def plot_grad_cam(image, heatmap, saliency=None, title=None, alpha=0.5, cell=2.6):
    """A photo, its Grad-CAM heat map laid over it, and optionally the saliency map.

    Parameters
    ----------
    image : (H, W, 3) uint8 or (C, H, W) uint8/float in [0, 1]: the picture the network saw (e.g.
        ``ImageNetPreprocess().resized_and_cropped(path)``), not the normalised input
    heatmap : (H, W) in [0, 1], e.g. ``tinycnn.explain.grad_cam(...).heatmap``
    saliency : (H, W) in [0, 1], optional, e.g. from :func:`tinycnn.explain.saliency_map`
    alpha : opacity of the heat map (``jet`` colours: red = strongest evidence for the class)
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 3 and image.shape[0] != 3:
        image = image.transpose(2, 0, 1)                                  # (H, W, 3) -> (3, H, W)
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W, 3) or (C, H, W); got shape {image.shape}")
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.shape != image.shape[1:]:
        raise ValueError(f"heatmap shape {heatmap.shape} differs from the image's {image.shape[1:]}")
    picture = _displayable(image)
    panels = 3 if saliency is not None else 2
    figure = _figure((cell * panels, cell + 0.35))
    axes = figure.subplots(1, panels)
    axes[0].imshow(picture, cmap="gray" if image.shape[0] == 1 else None)
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(picture, cmap="gray" if image.shape[0] == 1 else None)
    axes[1].imshow(heatmap, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    axes[1].set_title("Grad-CAM", fontsize=9)
    if saliency is not None:
        saliency = np.asarray(saliency, dtype=np.float64)
        bright = max(np.percentile(saliency, 99), 1e-12)                 # the top 1% saturate: visible specks
        axes[2].imshow(saliency, cmap="gray", vmin=0, vmax=bright)
        axes[2].set_title("saliency |dy/dx|", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
