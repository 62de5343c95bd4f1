"""The ``tinycnn`` command line (also ``python -m tinycnn``).

Every command is two functions:

* ``_add_<command>_parser(subparsers)`` registers the sub-parser, its ``--help`` text and arguments, and
  sets ``handler=_run_<command>`` (and ``prog=`` the sub-parser's prog, used in error messages);
* ``_run_<command>(args)`` does the work and returns an exit code (0 or None for success).

To add a command (``summary``, ``train``, ``evaluate``, ``predict``...), write those two functions and
append the first to :data:`COMMANDS`. Heavy imports (numpy, numba, torch) happen inside ``_run_*`` so
that ``tinycnn --help`` answers instantly.

Errors: bad arguments print one line ``tinycnn <command>: error: ...`` on stderr and exit with code 2
(argparse's convention); so do the expected run-time errors (``ValueError``, ``OSError`` such as
``FileNotFoundError``) raised by a handler. Anything else is a bug and keeps its traceback.
"""
import argparse
import json
import os
import sys

import tinycnn

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line on stderr (exit code 2), with a pointer to --help."""

    def error(self, message):
        _fail(self.prog, f"{message} (see '{self.prog} --help')")


def _fail(prog, message):
    """Print ``prog: error: message`` as one line on stderr and exit with code 2."""
    one_line = " ".join(str(message).split())
    print(f"{prog}: error: {one_line}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _positive_int(text):
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    """argparse type: a float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# --------------------------------------------------------------------------------------------- bench
def _add_bench_parser(subparsers):
    bench = subparsers.add_parser(
        "bench", help="time the kernels (against PyTorch when installed)",
        description="Benchmarks. 'tinycnn bench kernels' times every kernel family against PyTorch.")
    targets = bench.add_subparsers(dest="bench_target", metavar="TARGET", required=True)

    kernels = targets.add_parser(
        "kernels", help="forward/backward times of every kernel family vs PyTorch",
        description=(
            "Time our numba kernels on MobileNet-style float32 workloads in four directions\n"
            "(forward, backward-input, backward-weight, forward+backward total): the median of R runs\n"
            "after one warm-up run that compiles the kernels. When torch is importable, PyTorch runs\n"
            "in the same process with the same thread count, and the table shows ours/torch and a\n"
            "target for the fwd+bwd total: depthwise <= 1.0x, pointwise <= 1.5x, the rest <= 2.0x."),
        epilog=("examples:\n"
                "  tinycnn bench kernels\n"
                "  tinycnn bench kernels --only depthwise --repeat 20\n"
                "  tinycnn bench kernels --batch 1 --scale 0.25 --json bench.json   (quick run)"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    kernels.add_argument("--repeat", type=_positive_int, default=10, metavar="R",
                         help="timed runs per measurement; the median is reported (default: 10)")
    kernels.add_argument("--batch", type=_positive_int, default=None, metavar="N",
                         help="batch size of every workload (default: 8, the issue's shapes)")
    kernels.add_argument("--scale", type=_positive_float, default=1.0, metavar="F",
                         help="multiply H and W of every input by F, at least 4 pixels "
                              "(quick smoke runs; default: 1.0)")
    kernels.add_argument("--only", action="append", default=None, metavar="NAME",
                         help="run only workloads whose name contains NAME (repeatable), "
                              "e.g. 'depthwise', 'pointwise-24to144'")
    kernels.add_argument("--json", default=None, metavar="PATH", dest="json_path",
                         help="also write the results as JSON to PATH")
    kernels.add_argument("--no-torch", action="store_true",
                         help="do not compare against PyTorch even if it is installed")
    kernels.add_argument("--list", action="store_true", help="list the workloads and exit")
    kernels.set_defaults(handler=_run_bench_kernels, prog=kernels.prog)


def _run_bench_kernels(args):
    from tinycnn import bench

    if args.list:
        for workload in bench.WORKLOADS:
            print(f"{workload.name:<26}{workload.describe()}")
        return 0
    bench.main_kernels(only=args.only, batch=args.batch, scale=args.scale, repeat=args.repeat,
                       use_torch=not args.no_torch, json_path=args.json_path)
    return 0


# ------------------------------------------------------------------------------------------- summary
def _add_summary_parser(subparsers):
    summary = subparsers.add_parser(
        "summary", help="per-layer parameters, MACs, FLOPs and memory of a model",
        description=(
            "Profile one inference pass of a model of the zoo (tinycnn.profile): one row per layer with\n"
            "its input and output shapes, parameters, MACs (conv + fc multiply-accumulates, the papers'\n"
            "Mult-Adds), FLOPs (2 per MAC plus bias, batch norm, activations, pooling and adds) and output\n"
            "bytes; then the totals, the peak activation memory and the breakdown by layer kind.\n"
            "No layer computes anything (shapes only), so even ResNet-50 takes a fraction of a second."),
        epilog=("examples:\n"
                "  tinycnn summary mobilenet_v1\n"
                "  tinycnn summary mobilenet_v1 --width-mult 0.5 --resolution 160\n"
                "  tinycnn summary resnet50 --format csv > resnet50.csv\n"
                "  tinycnn summary mobilenet_v3_small --format json --no-bn --no-activations\n"
                "models: run 'python -c \"import tinycnn.models as m; print(m.list_models())\"' or give a wrong name"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    summary.add_argument("model", metavar="MODEL", help="a name from tinycnn.models.list_models(), e.g. mobilenet_v2")
    summary.add_argument("--width-mult", type=_positive_float, default=None, metavar="A",
                         help="width multiplier alpha (models that have one; default: the model's 1.0)")
    summary.add_argument("--resolution", type=_positive_int, default=224, metavar="R",
                         help="input height and width (default: 224)")
    summary.add_argument("--batch", type=_positive_int, default=1, metavar="N",
                         help="images per pass (default: 1, as the papers count)")
    summary.add_argument("--num-classes", type=_positive_int, default=1000, metavar="K",
                         help="classifier outputs (default: 1000)")
    summary.add_argument("--format", choices=("table", "csv", "json"), default="table",
                         help="output format (default: table)")
    summary.add_argument("--formulas", action="store_true",
                         help="table format: add a column with each row's formula")
    summary.add_argument("--no-bias", action="store_true", help="leave bias adds out of the FLOPs")
    summary.add_argument("--no-bn", action="store_true", help="leave batch norm out of the FLOPs (folded)")
    summary.add_argument("--no-activations", action="store_true", help="leave activations out of the FLOPs")
    summary.set_defaults(handler=_run_summary, prog=summary.prog)


def _model_arguments(name, num_classes, width_mult):
    """Keyword arguments for ``get_model(name, ...)``; ``ValueError`` if the model has no width multiplier."""
    import inspect

    from tinycnn import models

    if name not in models.list_models():
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(models.list_models())}")
    accepted = inspect.signature(getattr(models, name)).parameters
    arguments = {"num_classes": num_classes}
    if width_mult is not None:
        # GhostNet calls its multiplier `width` (timm's name); every other model `width_mult`.
        width_name = next((n for n in ("width_mult", "width") if n in accepted), None)
        if width_name is None:
            with_width = [m for m in models.list_models()
                          if {"width_mult", "width"} & set(inspect.signature(getattr(models, m)).parameters)]
            raise ValueError(f"{name} has no width multiplier; --width-mult works with: {', '.join(with_width)}")
        arguments[width_name] = width_mult
    return arguments


def _run_summary(args):
    from tinycnn import models
    from tinycnn.profile import profile

    model = models.get_model(args.model, **_model_arguments(args.model, args.num_classes, args.width_mult))
    result = profile(model, (args.batch, 3, args.resolution, args.resolution), bias=not args.no_bias,
                     bn=not args.no_bn, activations=not args.no_activations)
    if args.format == "json":
        data = result.to_dict()
        data["model"] = args.model
        data["width_mult"] = args.width_mult
        text = json.dumps(data, indent=2) + "\n"
    elif args.format == "csv":
        text = result.to_csv()
    else:
        width = "" if args.width_mult is None else f", width multiplier {args.width_mult:g}"
        text = (f"{args.model}{width}, input {args.batch}x3x{args.resolution}x{args.resolution}\n\n"
                f"{result.table(formulas=args.formulas)}\n")
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:         # the reader stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# ------------------------------------------------------------------------------------------- parser
COMMANDS = [_add_bench_parser, _add_summary_parser]   # later: train, evaluate, predict


def build_parser():
    """The top-level parser with one sub-parser per entry of :data:`COMMANDS`."""
    parser = _Parser(
        prog="tinycnn",
        description="tinycnn: a from-scratch NumPy + numba CNN engine for learning lightweight CNNs.",
        epilog="Run 'tinycnn COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"tinycnn {tinycnn.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def main(argv=None):
    """Entry point of the ``tinycnn`` console script; returns the process exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:   # report against the sub-command that was meant, so its --help is the one suggested
        prog = getattr(args, "prog", parser.prog)
        _fail(prog, f"unrecognized arguments: {' '.join(unknown)} (see '{prog} --help')")
    try:
        return args.handler(args) or 0
    except (ValueError, OSError) as error:
        _fail(getattr(args, "prog", f"tinycnn {args.command}"), error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
