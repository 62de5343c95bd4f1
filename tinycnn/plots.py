"""Plots for learning: what a network costs (this file starts with the profiler's plots).

* :func:`plot_macs_vs_params` -- one point per model: parameters (memory) against MACs (arithmetic).
  The two are different budgets: SqueezeNet has few parameters and many MACs, MobileNet V1's
  classifier holds a quarter of its parameters and almost none of its MACs.
* :func:`plot_macs_vs_time` -- MACs against measured time: the points do not lie on one line, because
  time also depends on memory traffic and on how well each layer kind is implemented (ShuffleNet V2's
  guidelines, arXiv:1807.11164).
* :func:`plot_layer_macs` -- one bar per layer, coloured by kind: where a network spends its MACs
  (MobileNet V1: 95% in the 1x1 convolutions, its Table 2).
* :func:`plot_zoo` -- the first two for the whole model zoo in one figure.

matplotlib is imported inside the functions; every function takes an optional ``ax`` and returns the
axes it drew on, so the plots compose in notebooks. Nothing calls ``plt.show()``.
"""
import numbers

__all__ = ["plot_macs_vs_params", "plot_macs_vs_time", "plot_layer_macs", "plot_zoo", "KIND_COLORS"]

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
