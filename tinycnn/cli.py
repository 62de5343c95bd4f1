"""The ``tinycnn`` command line (also ``python -m tinycnn``).

Every command is two functions:

* ``_add_<command>_parser(subparsers)`` registers the sub-parser, its ``--help`` text and arguments, and
  sets ``handler=_run_<command>`` (and ``prog=`` the sub-parser's prog, used in error messages);
* ``_run_<command>(args)`` does the work and returns an exit code (0 or None for success).

To add a command (``summary``, ``train``, ``evaluate``, ``predict``...), write those two functions and
append the first to :data:`COMMANDS`. Heavy imports (numpy, numba, torch) happen inside ``_run_*`` so
that ``tinycnn --help`` answers instantly.

Errors: whatever goes wrong ends as one line ``tinycnn <command>: error: ...`` on stderr, never a
traceback (:func:`main` is the one place that turns exceptions into that line). Bad arguments and bad
input (argparse's errors, ``ValueError``, ``TypeError``, ``OSError`` such as ``FileNotFoundError``) exit
with code 2 (argparse's convention); any other exception is a failure during the run and exits with
code 1, its message prefixed by the exception's type. ``--debug`` (anywhere on the command line) shows
the full traceback instead.
"""
import argparse
import json
import math
import os
import sys

import tinycnn

EXIT_USAGE = 2
EXIT_FAILURE = 1
# exceptions that mean "the input or the arguments are wrong" (exit 2); any other one is a failure (exit 1)
_BAD_INPUT_ERRORS = (ValueError, TypeError, LookupError, OSError)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line on stderr (exit code 2), with a pointer to --help."""

    def error(self, message):
        _fail(self.prog, f"{message} (see '{self.prog} --help')")


def _fail(prog, message):
    """Print ``prog: error: message`` as one line on stderr and exit with code 2."""
    one_line = " ".join(str(message).split())
    print(f"{prog}: error: {one_line}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _number_type(convert, accept, expected):
    """An argparse type: ``convert(text)`` (int or float), refused unless ``accept(value)``.

    The refusal is an ``ArgumentTypeError``, so argparse prints "argument --epochs: expected a positive
    integer, got '0'" and exits with code 2. NaN is refused by every comparison below; infinity and
    integers beyond 2**31 - 1 are refused too (no size, count or multiplier of this tool is that large,
    and they would only fail later with an OverflowError).
    """
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is not None and not math.isfinite(value):
            value = None                                        # inf: no size or multiplier is infinite
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        if abs(value) > _LARGEST_NUMBER:
            raise argparse.ArgumentTypeError(f"expected {expected} at most {_LARGEST_NUMBER}, got {text!r}")
        return value
    return parse


_LARGEST_NUMBER = 2**31 - 1
_positive_int = _number_type(int, lambda value: value >= 1, "a positive integer")
_positive_float = _number_type(float, lambda value: value > 0, "a positive number")
_fraction = _number_type(float, lambda value: 0 < value < 1, "a number between 0 and 1")
_non_negative_float = _number_type(float, lambda value: value >= 0, "a number >= 0")
_seed = _number_type(int, lambda value: value >= 0, "a non-negative integer")


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

    model_bench = targets.add_parser(
        "models", help="MobileNet training step and batch-1 inference vs PyTorch",
        description=("Time one training step (Adam, batch B x 3 x 32 x 32, 10 classes) and one batch-1\n"
                     "224 x 224 evaluation forward of MobileNet V2 (width 0.5, 1.0), V3-Small and V3-Large;\n"
                     "against torchvision's models with the same weights when torch is installed; and the\n"
                     "same forward by each framework's frozen model (nn.freeze, torch.jit.freeze).\n"
                     "Prints the CPU's vector extensions, thread count and peak memory (--memory: each\n"
                     "framework's training step alone in a fresh process, peak RSS)."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    model_bench.add_argument("--repeat", type=_positive_int, default=10, metavar="R",
                             help="timed runs per measurement; the median is reported (default: 10)")
    model_bench.add_argument("--batch", type=_positive_int, default=64, metavar="N",
                             help="training batch size (default: 64)")
    model_bench.add_argument("--only", action="append", default=None, metavar="NAME",
                             help="models whose name contains NAME (repeatable), e.g. 'v3_small'")
    model_bench.add_argument("--json", default=None, metavar="PATH", dest="json_path",
                             help="also write the results as JSON to PATH")
    model_bench.add_argument("--no-torch", action="store_true", help="our times only")
    model_bench.add_argument("--memory", action="store_true",
                             help="also run each framework's training step alone in a fresh process and report "
                                  "its peak resident memory")
    model_bench.set_defaults(handler=_run_bench_models, prog=model_bench.prog)


def _run_bench_models(args):
    import os

    from tinycnn import bench_models

    if args.json_path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.json_path))):
        raise ValueError(f"--json: the directory of {args.json_path!r} does not exist")
    bench_models.main_models(only=args.only, batch=args.batch, repeat=args.repeat, use_torch=not args.no_torch,
                             json_path=args.json_path, memory=args.memory)
    return 0


def _run_bench_kernels(args):
    from tinycnn import bench

    if args.list:
        width = max(len(workload.name) for workload in bench.WORKLOADS) + 2
        for workload in bench.WORKLOADS:
            print(f"{workload.name:<{width}}{workload.describe()}")
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
            "bytes, memory access (elements read + written) and receptive field; then the totals, the peak\n"
            "activation memory and the breakdown by layer kind.\n"
            "No layer computes anything (shapes only), so even ResNet-50 takes a fraction of a second;\n"
            "--time runs the layers and adds each one's measured milliseconds."),
        epilog=("examples:\n"
                "  tinycnn summary mobilenet_v1\n"
                "  tinycnn summary mobilenet_v1 --width-mult 0.5 --resolution 160\n"
                "  tinycnn summary resnet50 --format csv > resnet50.csv\n"
                "  tinycnn summary mobilenet_v3_small --format json --no-bn --no-activations\n"
                "  tinycnn summary mobilenet_v2 --time --backward\n"
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
    summary.add_argument("--time", action="store_true",
                         help="also run the layers and show each one's median forward milliseconds next to its "
                              "MACs and memory access (FLOPs are not latency)")
    summary.add_argument("--backward", action="store_true", help="with --time: time the backward pass too")
    summary.add_argument("--repeat", type=_positive_int, default=5, metavar="R",
                         help="with --time: timed passes, the median is shown (default: 5)")
    summary.set_defaults(handler=_run_summary, prog=summary.prog)


def _model_arguments(name, num_classes, width_mult):
    """Keyword arguments for ``get_model(name, ...)``; ``ValueError`` if the model has no width multiplier."""
    from tinycnn import models

    arguments = {"num_classes": num_classes}
    if width_mult is not None:
        if "width_mult" not in models.model_arguments(name):      # also: ValueError for an unknown model
            with_width = [m for m in models.list_models() if "width_mult" in models.model_arguments(m)]
            raise ValueError(f"{name} has no width multiplier; --width-mult works with: {', '.join(with_width)}")
        arguments["width_mult"] = width_mult
    return arguments


def _run_summary(args):
    from tinycnn import models
    from tinycnn.nn import init
    from tinycnn.profile import profile

    if args.backward and not args.time:
        raise ValueError("--backward needs --time")
    # the counts need only the shapes: a model that is not timed is built without drawing its weights
    with init.skip_init(not args.time):
        model = models.get_model(args.model, **_model_arguments(args.model, args.num_classes, args.width_mult))
    timing = {"mode": "time", "backward": args.backward, "repeat": args.repeat} if args.time else {}
    result = profile(model, (args.batch, 3, args.resolution, args.resolution), bias=not args.no_bias,
                     bn=not args.no_bn, activations=not args.no_activations, **timing)
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


# --------------------------------------------------------------------------------------------- train
_TRAIN_OPTIONS = ("model", "width_mult", "data", "image_size", "classes", "val_fraction", "val_source", "max_images",
                  "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "augment",
                  "label_smoothing", "seed", "weights", "freeze_backbone")   # TrainConfig fields set on the command line
_DEFAULT_RUNS = "runs"


def _class_list(text):
    """argparse type: comma-separated class names (or indices), e.g. 'cat,dog'."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated class names, got {text!r}")
    return [int(name) if name.isdigit() else name for name in names]


def _add_train_parser(subparsers):
    from tinycnn.run import AUGMENTATIONS, DEFAULT_IMAGE_SIZE, DEFAULT_WIDTH_MULT, VAL_SOURCES, TrainConfig
    from tinycnn.train import OPTIMIZERS, SCHEDULES

    defaults = TrainConfig()
    train = subparsers.add_parser(
        "train", help="train a model (default: a small MobileNet V2 on the built-in shapes data)",
        description=(
            "Train a model of the zoo on the built-in procedural dataset or on local data, with a progress\n"
            "bar, validation every epoch, checkpoints (last.npz, best.npz), history (JSON, CSV), plots\n"
            "(curves, confusion matrix, first-layer filters, feature maps, PCA/t-SNE of the features) and\n"
            f"summary.json in the output folder. Without options: MobileNet V2 (width {DEFAULT_WIDTH_MULT:g}) on "
            "'shapes',\n4000 training and 1000 validation images, 10 epochs: about a minute on two CPU cores\n"
            "(the first run on a machine also compiles the kernels: about two minutes) and >= 90% validation\n"
            "accuracy.\n"
            "Ctrl-C saves a checkpoint; '--resume' continues exactly where the run stopped."),
        epilog=("examples:\n"
                "  tinycnn train\n"
                "  tinycnn train --epochs 8 --width-mult 1.0 --out runs/wider\n"
                "  tinycnn train --data mnist:~/data/mnist --epochs 2\n"
                "  tinycnn train --data folder:~/photos --image-size 64 --batch-size 32\n"
                "  tinycnn train --data folder:~/cats_dogs --weights runs/train/best.npz --freeze-backbone\n"
                "  tinycnn train --resume runs/train\n"
                "data specs: shapes, shapes:N (N images), mnist:DIR, fashion:DIR (IDX files),\n"
                "cifar10:DIR (python batches), folder:DIR (one sub-folder of images per class).\n"
                "Nothing is downloaded: the paths are local files."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # Options default to None so that --resume can tell which ones were given; TrainConfig holds the defaults.
    group = train.add_argument_group("model and data")
    group.add_argument("--model", default=None, metavar="NAME",
                       help=f"a model of tinycnn.models.list_models() (default: {defaults.model})")
    group.add_argument("--width-mult", type=_positive_float, default=None, metavar="A",
                       help=f"width multiplier alpha (default: {DEFAULT_WIDTH_MULT} for models that have one)")
    group.add_argument("--data", default=None, metavar="SPEC",
                       help="shapes | shapes:N | mnist:DIR | fashion:DIR | cifar10:DIR | folder:DIR "
                            f"(default: {defaults.data})")
    group.add_argument("--image-size", type=_positive_int, default=None, metavar="S",
                       help="images are resized (shapes: drawn) at S x S (default: "
                            + ", ".join(f"{size} {kind}" for kind, size in DEFAULT_IMAGE_SIZE.items()) + ")")
    group.add_argument("--classes", type=_class_list, default=None, metavar="A,B,...",
                       help="train on these classes only, e.g. 'circle,ring' (default: all)")
    group.add_argument("--val-fraction", type=_fraction, default=None, metavar="F",
                       help=f"share of the images held out for validation (default: {defaults.val_fraction}, "
                            "an 8:2 split)")
    group.add_argument("--val-source", choices=VAL_SOURCES, default=None,
                       help="split: hold out --val-fraction of the training images (default); test: validate on "
                            "the official test files (mnist, fashion, cifar10)")
    group.add_argument("--max-images", type=_positive_int, default=None, metavar="N",
                       help="use a seeded subset of N images (quick runs; default: all)")
    group.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                       help="training augmentation: random crop with padding and/or horizontal flip "
                            "(default: auto = none for shapes, crop for MNIST, crop+flip otherwise)")
    group = train.add_argument_group("optimisation")
    group.add_argument("--epochs", type=_positive_int, default=None, metavar="E",
                       help=f"epochs (default: {defaults.epochs})")
    group.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                       help=f"images per step (default: {defaults.batch_size})")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                       help=f"sgd (momentum 0.9, Nesterov), adam or adamw (default: {defaults.optimizer})")
    group.add_argument("--lr", type=_positive_float, default=None, metavar="LR",
                       help=f"peak learning rate (default: {defaults.lr:g})")
    group.add_argument("--weight-decay", type=_non_negative_float, default=None, metavar="WD",
                       help="weight decay, not applied to biases and batch norm "
                            "(default: 5e-4 sgd, 0 adam, 0.05 adamw)")
    group.add_argument("--schedule", choices=SCHEDULES, default=None,
                       help="learning rate per step: cosine (5%% warm-up, then cosine to 0), step (x0.1 at 50%% "
                            f"and 75%%) or constant (default: {defaults.schedule})")
    group.add_argument("--label-smoothing", type=_non_negative_float, default=None, metavar="EPS",
                       help="label smoothing of the cross-entropy (default: 0)")
    group.add_argument("--seed", type=_seed, default=None, metavar="N",
                       help="seeds the weights, the split, the batch order and the augmentation (default: 0)")
    group = train.add_argument_group("transfer learning")
    group.add_argument("--weights", default=None, metavar="PATH",
                       help="start from these weights (.npz weights or checkpoint, or a torchvision .pth): "
                            "everything but the final classifier, which is rebuilt for the new classes")
    group.add_argument("--freeze-backbone", action="store_true", default=None,
                       help="with --weights: train only the classifier (the rest stays fixed, in eval mode)")
    group = train.add_argument_group("output")
    group.add_argument("--out", default=None, metavar="DIR",
                       help=f"output folder (default: {_DEFAULT_RUNS}/train, or {_DEFAULT_RUNS}/train-2, ... if "
                            "that one holds a run)")
    group.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                       help="continue the run in DIR (default: --out, else the latest run in runs/) from "
                            "its last.npz, with its own settings")
    group.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch lines")
    group.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    group.add_argument("--no-tsne", action="store_true",
                       help="leave out the t-SNE embedding of the features (NumPy, ~5 s for 1000 images)")
    group.add_argument("--feature-layer", default=None, metavar="NAME",
                       help="layer whose feature maps are plotted, a dotted name such as 'features.3' "
                            "(default: the deepest conv whose maps are >= 1/4 of the image)")
    train.set_defaults(handler=_run_train, prog=train.prog)


def _train_out_dir(args):
    """The run folder: --resume DIR, --out, or the first free runs/train, runs/train-2, ..."""
    import pathlib

    from tinycnn.run import find_latest_run
    from tinycnn.train import LAST_CHECKPOINT

    if args.resume is not None:
        if isinstance(args.resume, str):
            path = pathlib.Path(args.resume).expanduser()
            return path.parent if path.suffix == ".npz" else path
        if args.out is not None:
            return pathlib.Path(args.out).expanduser()
        latest = find_latest_run(_DEFAULT_RUNS, LAST_CHECKPOINT)
        if latest is None:
            raise ValueError(f"--resume: no run found in {_DEFAULT_RUNS}/ (give the run's folder: --resume DIR)")
        return latest.parent
    if args.out is not None:
        out = pathlib.Path(args.out).expanduser()
        if (out / LAST_CHECKPOINT).exists():
            raise ValueError(f"{out} already holds a run: continue it with '--resume {args.out}', or choose "
                             f"another --out")
        return out
    base = pathlib.Path(_DEFAULT_RUNS) / "train"
    out, number = base, 1
    while (out / LAST_CHECKPOINT).exists():
        number += 1
        out = base.with_name(f"train-{number}")
    return out


def _run_train(args):
    import dataclasses

    from tinycnn import run, train

    given = {name: getattr(args, name) for name in _TRAIN_OPTIONS if getattr(args, name) is not None}
    if args.resume is not None and given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"{options} cannot be combined with --resume: a resumed run keeps the settings saved "
                         f"in its checkpoint")
    config = dataclasses.replace(run.TrainConfig(), **given)        # checked and resolved by run_training
    out_dir = _train_out_dir(args)
    try:
        result = run.run_training(config, out_dir, resume=args.resume is not None, progress=not args.quiet,
                                  log=None if args.quiet else print, plots=not args.no_plots, tsne=not args.no_tsne,
                                  feature_layer=args.feature_layer)
    except train.TrainingDiverged as error:
        print(f"{args.prog}: error: {error}", file=sys.stderr)
        return 1
    except train.TrainingInterrupted as error:
        where = f"; continue with: tinycnn train --resume {out_dir}" if error.checkpoint else ""
        print(f"{error}{where}", file=sys.stderr)
        return 130
    _print_train_summary(result.info["summary"], out_dir)
    return 0


def _print_train_summary(summary, out_dir):
    import pathlib

    best = summary["best_val_accuracy"]
    names = ", ".join(pathlib.Path(path).name for path in summary["files"])
    print(f"best validation accuracy {100 * best:.1f}% (epoch {summary['best_epoch']} of {summary['epochs']}), "
          f"final {100 * summary['final_val_accuracy']:.1f}%\n"
          f"{summary['train_images']} training / {summary['val_images']} validation images, "
          f"{summary['parameters']:,} parameters, {summary['images_per_second']:.0f} images/s\n"
          f"time: {summary['train_seconds']:.0f} s training, {summary['total_seconds']:.0f} s in all "
          f"on {summary.get('cpu', 'an unnamed CPU')}\n"
          f"wrote {out_dir}/: {names}")


def _checkpoint_argument(path):
    """A checkpoint path, a run folder, or (None) the latest runs/*/best.npz."""
    from tinycnn.run import find_latest_run

    if path is not None:
        return path
    latest = find_latest_run(_DEFAULT_RUNS)
    if latest is None:
        raise ValueError(f"no trained run found in {_DEFAULT_RUNS}/: run 'tinycnn train' first, or give "
                         f"--checkpoint PATH")
    return latest


# ------------------------------------------------------------------------------------------ evaluate
def _add_evaluate_parser(subparsers):
    evaluate = subparsers.add_parser(
        "evaluate", help="accuracy, loss and confusion matrix of a trained run",
        description=(
            "Evaluate a checkpoint written by 'tinycnn train' on its validation images (rebuilt from the\n"
            "run's data spec and seed, so exactly the images it validated on), or on other data: the\n"
            "overall accuracy and loss, the accuracy of every class and the confusion matrix."),
        epilog=("examples:\n"
                "  tinycnn evaluate                          (the latest run's best.npz)\n"
                "  tinycnn evaluate runs/train/last.npz --split train\n"
                "  tinycnn evaluate runs/mnist --data mnist:~/data/mnist --json"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("checkpoint", nargs="?", default=None, metavar="CHECKPOINT",
                          help="a .npz checkpoint or a run folder (default: the latest runs/*/best.npz)")
    evaluate.add_argument("--data", default=None, metavar="SPEC", help="other data with the same classes")
    evaluate.add_argument("--split", choices=("val", "train", "all"), default="val",
                          help="which part of the data (default: val)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=128, metavar="B",
                          help="images per forward pass (default: 128)")
    evaluate.add_argument("--plot", default=None, metavar="PNG", help="also write the confusion matrix as a PNG")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.set_defaults(handler=_run_evaluate, prog=evaluate.prog)


def _run_evaluate(args):
    import numpy as np

    from tinycnn import run
    from tinycnn.evaluate import confusion_matrix

    checkpoint = _checkpoint_argument(args.checkpoint)
    evaluation, class_names, config = run.evaluate_run(checkpoint, data=args.data, split=args.split,
                                                       batch_size=args.batch_size)
    matrix = confusion_matrix(evaluation.labels, evaluation.predictions, len(class_names))
    per_class = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
    if args.plot:
        from tinycnn import plots
        plots.save_figure(plots.plot_confusion_matrix(matrix, class_names), args.plot)
    if args.json:
        print(json.dumps({"checkpoint": str(checkpoint), "data": args.data or config.data, "split": args.split,
                          "images": int(len(evaluation.labels)), "accuracy": evaluation.accuracy,
                          "loss": evaluation.loss, "class_names": list(class_names),
                          "class_accuracy": per_class.tolist(), "confusion_matrix": matrix.tolist()}, indent=1))
        return 0
    print(f"{checkpoint}: {args.split} part of {args.data or config.data}, {len(evaluation.labels)} images")
    print(f"accuracy {100 * evaluation.accuracy:.2f}%   loss {evaluation.loss:.4f}\n")
    width = max(len(name) for name in class_names)
    print(f"{'class':<{width}}  images  accuracy")
    for name, count, accuracy in zip(class_names, matrix.sum(axis=1), per_class):
        print(f"{name:<{width}}  {count:6d}  {100 * accuracy:7.1f}%")
    if len(class_names) <= 12:
        print("\nconfusion matrix (rows: true class, columns: predicted, in the order above)")
        for row in matrix:
            print(" ".join(f"{count:5d}" for count in row))
    if args.plot:
        print(f"\nwrote {args.plot}")
    return 0


# ------------------------------------------------------------------------------------------- predict
def _add_predict_parser(subparsers):
    predict = subparsers.add_parser(
        "predict", help="classify image files with a trained run or pretrained ImageNet weights",
        description=(
            "Classify image files (PNG, JPEG, ...) with a checkpoint written by 'tinycnn train': each image\n"
            "is resized to the run's image size and normalised as in training; the most probable classes\n"
            "are printed with their softmax probabilities.\n"
            "With --weights, a torchvision checkpoint (.pth, read without PyTorch) or .npz weights are\n"
            "loaded into the zoo model --model, and each image is prepared as for ImageNet (shorter side\n"
            "256, centre crop 224, ImageNet mean/std)."),
        epilog=("examples:\n"
                "  tinycnn predict cat.jpg dog.png\n"
                "  tinycnn predict --checkpoint runs/pets/best.npz --top 1 photos/*.jpg\n"
                "  tinycnn predict chelsea.png --weights mobilenet_v2-b0353104.pth --model mobilenet_v2 "
                "--labels imagenet"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument("--checkpoint", default=None, metavar="PATH",
                         help="a .npz checkpoint or a run folder (default: the latest runs/*/best.npz)")
    predict.add_argument("--top", type=_positive_int, default=None, metavar="K",
                         help="classes shown per image (default: 3 for a run, 5 with --weights)")
    predict.add_argument("--json", action="store_true", help="print the results as JSON")
    pretrained = predict.add_argument_group("pretrained weights instead of a run")
    pretrained.add_argument("--weights", default=None, metavar="PATH",
                            help="a .pth/.pt (torchvision) or .npz weights file for --model")
    pretrained.add_argument("--model", default=None, metavar="NAME", help="zoo model the weights are for")
    pretrained.add_argument("--labels", default="imagenet", metavar="LABELS",
                            help="'imagenet' (default: the 1000 ImageNet classes) or a text file, one name a line")
    predict.set_defaults(handler=_run_predict, prog=predict.prog)


def _predict_pretrained(args):
    """``tinycnn predict --weights``: a zoo model with pretrained weights, ImageNet preprocessing."""
    from tinycnn import pretrained

    if args.checkpoint is not None:
        raise ValueError("give either --checkpoint (a trained run) or --weights (pretrained weights), not both")
    if args.model is None:
        raise ValueError("--weights needs --model NAME, the zoo model the weights are for (e.g. mobilenet_v2)")
    class_names = pretrained.read_class_names(args.labels)
    model = pretrained.pretrained_model(args.model, args.weights, num_classes=len(class_names))
    return pretrained.classify_images(model, args.images, class_names, top=min(args.top or 5, len(class_names)))


def _run_predict(args):
    from tinycnn import run

    if args.weights is not None:
        results = _predict_pretrained(args)
    elif args.model is not None:
        raise ValueError("--model is for pretrained --weights; a trained run's checkpoint names its own model")
    else:
        checkpoint = _checkpoint_argument(args.checkpoint)
        model, config, extra = run.load_run(checkpoint)
        images = run.load_images(args.images, config.image_size)
        results = run.predict_images(model, extra, images, top=min(args.top or 3, len(extra["class_names"])))
    if args.json:
        print(json.dumps([{"image": path, "predictions": [{"class": name, "probability": p} for name, p in ranked]}
                          for path, ranked in zip(args.images, results)], indent=1))
        return 0
    for path, ranked in zip(args.images, results):
        print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in ranked))
    return 0

# ----------------------------------------------------------------------------------------- exercises
def _add_exercises_parser(subparsers):
    exercises = subparsers.add_parser(
        "exercises", help="classroom exercises: list, release student notebooks, check, grade a class",
        description="Classroom exercises (tinycnn.exercises): functions to write, checked on fresh cases, with "
                    "the usual mistakes named.")
    actions = exercises.add_subparsers(dest="exercises_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every exercise with its one-line statement")
    release = actions.add_parser(
        "release", help="student notebooks from source notebooks",
        description="Copy every SOURCE_DIR/*.ipynb to OUT_DIR with each '### BEGIN SOLUTION' ... "
                    "'### END SOLUTION' region replaced by a stub that raises NotImplementedError.")
    release.add_argument("source_dir", metavar="SOURCE_DIR")
    release.add_argument("out_dir", metavar="OUT_DIR")
    check = actions.add_parser(
        "check", help="run one notebook and print each exercise's result (exit 1 unless all pass)")
    check.add_argument("notebook", metavar="NOTEBOOK")
    grade = actions.add_parser(
        "grade", help="execute every submitted notebook and write a gradebook CSV",
        description="Execute SUBMISSIONS_DIR/STUDENT/*.ipynb (or SUBMISSIONS_DIR/STUDENT.ipynb), each in its own "
                    "kernel with a time limit, check every exercise, write one row per student and exercise.")
    grade.add_argument("submissions_dir", metavar="SUBMISSIONS_DIR")
    grade.add_argument("--out", default="grades.csv", help="the CSV to write (default: grades.csv)")
    grade.add_argument("--source", default=None, metavar="DIR",
                       help="the source notebooks, which say each notebook's exercises (default: the notebooks' "
                            "own metadata)")
    for action in (check, grade):
        action.add_argument("--timeout", type=_positive_float, default=120.0,
                            help="seconds for a notebook's cells, and again for checking them (default: 120)")
    for action in (listing, release, check, grade):
        action.set_defaults(handler=_run_exercises, prog=action.prog)


def _print_graded_notebook(rows):
    """One line per graded notebook: ``ada/02_costs.ipynb: 5/7 passed``."""
    passed = sum(row.status == "passed" for row in rows)
    trouble = f" ({rows[0].status})" if rows[0].status in ("crashed", "timeout", "invalid") else ""
    print(f"{rows[0].student}/{rows[0].notebook}: {passed}/{len(rows)} passed{trouble}")


def _run_exercises(args):
    from .exercises import list_exercises
    from .exercises.checker import CATALOGUE
    from .exercises.grade import GradingUnavailable, grade, run_notebook
    from .exercises.release import read_notebook, release

    if args.exercises_action == "list":
        for name, statement in list_exercises().items():
            print(f"{CATALOGUE[name].topic:<13} {name:<26} {statement}")
        return 0
    if args.exercises_action == "release":
        for path in release(args.source_dir, args.out_dir):
            print(f"wrote {path}")
        return 0
    try:
        if args.exercises_action == "check":
            notebook = read_notebook(args.notebook)
            names = notebook.get("metadata", {}).get("tinycnn", {}).get("exercises") or []
            if not names:
                raise ValueError(f"{args.notebook} lists no exercises (metadata tinycnn.exercises)")
            results, notes = run_notebook(notebook, names, timeout=args.timeout)
            for note in notes:
                print(f"note: {note}")
            if results is None:
                return 1
            for name, (status, score, message) in results.items():
                text = message if message.startswith(name) else f"{name}: {message}"
                print(f"{status.upper():<8} {text}")
            return 0 if all(status == "passed" for status, _, _ in results.values()) else 1
        rows = grade(args.submissions_dir, args.out, timeout=args.timeout, source_dir=args.source,
                     progress=_print_graded_notebook)
        print(f"wrote {args.out}: {len(rows)} rows")
        return 0
    except GradingUnavailable as error:
        _fail(args.prog, error)


# ------------------------------------------------------------------------------------------ quantize
_bits = _number_type(int, lambda value: 2 <= value <= 16, "an integer from 2 to 16")
_percentile = _number_type(float, lambda value: 50 < value <= 100, "a number in (50, 100]")
_amount = _number_type(float, lambda value: 0 <= value < 1, "a fraction in [0, 1)")


def _add_quantize_parser(subparsers):
    quantize = subparsers.add_parser(
        "quantize", help="post-training quantisation of a trained run: accuracy and size at int8, float16, ...",
        description=(
            "Simulate low-precision inference of a run written by 'tinycnn train' (or 'tinycnn prune'),\n"
            "or of a weights file: batch norm is folded into the convolutions, weights are quantised per\n"
            "output channel, and the input of every convolution and fully connected layer per tensor, with\n"
            "ranges calibrated on training images. Prints the validation accuracy and the model size in\n"
            "bytes at float32, float16 and each --bits.\n"
            "A weights file (.npz of tinycnn.io.save_weights, or a pruned model saved by\n"
            "tinycnn.prune.save_pruned) names no data: give --data, and --model (and --width-mult) unless the\n"
            "file stores its pruned architecture. Its images are normalised by the training part's mean\n"
            "and std, as 'tinycnn train' does."),
        epilog=("examples:\n"
                "  tinycnn quantize                               (the latest run's best.npz)\n"
                "  tinycnn quantize runs/train --bits 8 6 4 --calibration 512\n"
                "  tinycnn quantize runs/train/pruned.npz --method percentile --percentile 99.99\n"
                "  tinycnn quantize weights.npz --model mobilenet_v2 --width-mult 0.5 --data shapes"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    quantize.add_argument("run", nargs="?", default=None, metavar="RUN_OR_WEIGHTS",
                          help="a run folder or checkpoint, or a weights file (default: the latest "
                               "runs/*/best.npz)")
    quantize.add_argument("--bits", type=_bits, nargs="+", default=[8], metavar="B",
                          help="integer bit widths to simulate (default: 8)")
    quantize.add_argument("--calibration", type=_positive_int, default=256, metavar="N",
                          help="training images used to calibrate the activation ranges (default: 256)")
    quantize.add_argument("--method", choices=("minmax", "percentile"), default="minmax",
                          help="activation range: min/max seen, or percentiles (default: minmax)")
    quantize.add_argument("--percentile", type=_percentile, default=99.99, metavar="P",
                          help="with --method percentile: clip below the (100-P)th and above the Pth (default: 99.99)")
    quantize.add_argument("--batch-size", type=_positive_int, default=128, metavar="B",
                          help="images per forward pass (default: 128)")
    quantize.add_argument("--json", action="store_true", help="print the results as JSON")
    weights = quantize.add_argument_group("a weights file instead of a run")
    weights.add_argument("--data", default=None, metavar="SPEC",
                         help="the data to calibrate and evaluate on (with a run: other data with its classes)")
    weights.add_argument("--model", default=None, metavar="NAME", help="zoo model the weights are for")
    weights.add_argument("--width-mult", type=_positive_float, default=None, metavar="W",
                         help="its width multiplier (default: the model's own)")
    weights.add_argument("--image-size", type=_positive_int, default=None, metavar="S",
                         help="image size (default: the data's usual one)")
    quantize.set_defaults(handler=_run_quantize, prog=quantize.prog)


def _run_data_loaders(checkpoint, batch_size, calibration=None, data=None):
    """A run's model and its validation loader (and ``calibration`` normalised training images).

    ``data``: other data with the run's classes instead of its own (as ``tinycnn evaluate --data``).
    """
    from tinycnn import run
    from tinycnn.data import Normalize

    model, config, extra = run.load_run(checkpoint)
    loaded = run.load_config_data(config, data)
    val_loader, images = _normalised_parts(loaded, Normalize(extra["mean"], extra["std"]), batch_size, calibration)
    return model, config, val_loader, images


def _normalised_parts(loaded, normalize, batch_size, calibration):
    """Validation loader and the first ``calibration`` training images (float32), both normalised."""
    import numpy as np

    from tinycnn.data import DataLoader, to_float32

    val_loader = DataLoader(loaded.val.images, loaded.val.labels, batch_size, transform=normalize)
    images = None
    if calibration is not None:
        images = normalize(to_float32(loaded.train.images[:calibration])).astype(np.float32)
    return val_loader, images


def _is_run_checkpoint(path):
    """True for a run folder or a checkpoint of 'tinycnn train' / 'tinycnn prune' (it names its data)."""
    import pathlib

    from tinycnn import io

    path = pathlib.Path(path).expanduser()
    if path.is_dir() or not path.is_file():
        return True                                  # a missing file: load_run's one-line error names it
    try:
        checkpoint = io.load_checkpoint(path)
    except ValueError:                               # plain weights (or not ours at all)
        return False
    return "config" in checkpoint.get("extra", {})


def _weights_data_loaders(path, args):
    """``tinycnn quantize WEIGHTS``: the model from ``--model``/``--width-mult`` or the file's pruned
    architecture, the data from ``--data``, normalised by its training part's mean and std."""
    import pathlib

    from tinycnn import io, prune, run
    from tinycnn.data import Normalize

    path = pathlib.Path(path).expanduser()
    architecture = prune.read_architecture(path)
    if architecture is None and args.model is None:
        raise ValueError(f"{path} holds weights without their architecture: give --model NAME (and --width-mult W) "
                         f"and --data SPEC")
    if args.data is None:
        raise ValueError(f"{path} is not a run and names no data: give --data SPEC to calibrate and evaluate on")
    if architecture is not None and args.model not in (None, architecture["model"]):
        raise ValueError(f"{path} holds a pruned {architecture['model']}, not a {args.model}: leave --model out")
    model_name = architecture["model"] if architecture is not None else args.model
    config = run.TrainConfig(model=model_name, data=args.data, image_size=args.image_size,
                             width_mult=args.width_mult).resolved()
    loaded = run.load_config_data(config)
    if architecture is not None:
        model, state = prune.build_pruned(architecture), io.load_checkpoint(path)["model"]
    else:
        model, state = run.build_model(model_name, len(loaded.class_names), args.width_mult), io.load_weights(path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as error:
        detail = " ".join(str(error).split())
        width = "its default width" if args.width_mult is None else f"--width-mult {args.width_mult:g}"
        raise ValueError(f"{path} does not fit {model_name} at {width} with {len(loaded.class_names)} classes "
                         f"(check --model and --width-mult): {detail[:160]}{' ...' if len(detail) > 160 else ''}"
                         ) from None
    normalize = Normalize(*run.training_normalization(loaded.train.images))     # as tinycnn train normalises
    val_loader, images = _normalised_parts(loaded, normalize, args.batch_size, args.calibration)
    return model.eval(), config, val_loader, images


def _run_quantize(args):
    from tinycnn import quantize
    from tinycnn.evaluate import evaluate_model

    checkpoint = _checkpoint_argument(args.run)
    if _is_run_checkpoint(checkpoint):
        given = [name for name in ("model", "width_mult", "image_size") if getattr(args, name) is not None]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} is for a weights file; the run {checkpoint} names its "
                             f"own model and images")
        model, config, val_loader, images = _run_data_loaders(checkpoint, args.batch_size, args.calibration,
                                                              args.data)
    else:
        model, config, val_loader, images = _weights_data_loaders(checkpoint, args)
    batches = [images[start:start + args.batch_size] for start in range(0, len(images), args.batch_size)]
    folded = quantize.fold_batch_norm(model)
    rows = [("float32", evaluate_model(model, val_loader).accuracy, quantize.model_size_bytes(folded))]
    half = quantize.quantize_model(model, batches[:1], precision="float16")
    rows.append(("float16", evaluate_model(half, val_loader).accuracy, quantize.model_size_bytes(folded, "float16")))
    for bits in args.bits:
        quantized = quantize.quantize_model(model, batches, bits=bits, calibration_method=args.method,
                                            percentile=args.percentile)
        rows.append((f"int{bits}", evaluate_model(quantized, val_loader).accuracy,
                     quantize.model_size_bytes(folded, "int", bits=bits)))
    if args.json:
        print(json.dumps({"checkpoint": str(checkpoint), "data": args.data or config.data,
                          "calibration_images": len(images), "method": args.method,
                          "results": [{"precision": name, "accuracy": accuracy, "size_bytes": size}
                                      for name, accuracy, size in rows]}, indent=1))
        return 0
    print(f"{checkpoint}: {config.model} on {args.data or config.data}, {len(val_loader.labels)} validation images; "
          f"ranges from {len(images)} training images ({args.method})")
    print(f"{'precision':<10} {'accuracy':>9} {'change':>8} {'size (bytes)':>14}")
    for name, accuracy, size in rows:
        change = "" if name == "float32" else f"{100 * (accuracy - rows[0][1]):+.2f}"
        print(f"{name:<10} {100 * accuracy:8.2f}% {change:>8} {size:>14,}")
    print("(batch norm folded into the convolutions; integer sizes: weights at B bits + a float32 scale per "
          "output channel, biases int32)")
    return 0


# --------------------------------------------------------------------------------------------- prune
def _add_prune_parser(subparsers):
    from tinycnn.prune import CRITERIA, TIED

    prune = subparsers.add_parser(
        "prune", help="structured channel pruning of a trained run: a smaller network to fine-tune",
        description=(
            "Remove the least important channels of every prunable layer of a run written by 'tinycnn train'\n"
            "(MobileNet V1/V2, MobileNeXt, ResNet): a genuinely smaller network (fewer filters, BN entries and\n"
            "input slices), saved with its architecture. Prints the validation accuracy, parameters, MACs and\n"
            "the measured forward time before and after. Fine-tune it with\n"
            "'tinycnn train --weights PRUNED.npz' (same --model and --width-mult)."),
        epilog=("examples:\n"
                "  tinycnn prune runs/train --amount 0.5 --criterion bn\n"
                "  tinycnn prune runs/train --criterion bn --threshold 0.2 --out runs/slim.npz\n"
                "  tinycnn prune runs/train --amount 0.3 --tied prune       (shortcut channels too)\n"
                "  tinycnn train --weights runs/train/pruned.npz --epochs 3 --out runs/finetuned"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    prune.add_argument("run", nargs="?", default=None, metavar="RUN",
                       help="a run folder or checkpoint (default: the latest runs/*/best.npz)")
    prune.add_argument("--amount", type=_amount, default=0.5, metavar="F",
                       help="fraction of each prunable layer's channels removed (default: 0.5)")
    prune.add_argument("--criterion", choices=CRITERIA, default="l1",
                       help="l1: L1 norm of the filters; bn: |gamma| of the batch norm (default: l1)")
    prune.add_argument("--threshold", type=_non_negative_float, default=None, metavar="T",
                       help="instead of --amount: remove every channel whose score is below T")
    prune.add_argument("--tied", choices=TIED, default="keep",
                       help="channels added to a shortcut: keep them, or prune each residual stage's channels as "
                            "one group, the same indices from every layer that writes or reads them (default: keep)")
    prune.add_argument("--out", default=None, metavar="PATH",
                       help="where to write the pruned model (default: pruned.npz next to the checkpoint)")
    prune.add_argument("--batch-size", type=_positive_int, default=128, metavar="B",
                       help="images per forward pass (default: 128)")
    prune.add_argument("--json", action="store_true", help="print the results as JSON")
    prune.set_defaults(handler=_run_prune, prog=prune.prog)


def _run_prune(args):
    import pathlib

    import statistics

    import numpy as np

    from tinycnn import prune, run
    from tinycnn.bench import time_interleaved
    from tinycnn.evaluate import evaluate_model
    from tinycnn.profile import profile

    checkpoint = pathlib.Path(_checkpoint_argument(args.run)).expanduser()
    model, config, val_loader, _ = _run_data_loaders(checkpoint, args.batch_size)
    pruned = prune.prune_channels(model, args.amount, criterion=args.criterion, threshold=args.threshold,
                                  tied=args.tied).eval()
    shape = (1, 3, config.image_size, config.image_size)
    # forward passes of 32 images, the two models in turns (the same background load), median of 5 each
    x = np.random.default_rng(0).standard_normal((32,) + shape[1:]).astype(np.float32)
    milliseconds = time_interleaved([lambda: model(x), lambda: pruned(x)], repeat=5)
    rows = []
    for name, network, times in (("before", model, milliseconds[0]), ("after", pruned, milliseconds[1])):
        cost = profile(network, shape)
        rows.append((name, evaluate_model(network, val_loader).accuracy, cost.params, cost.macs,
                     statistics.median(times) / 1000 / len(x)))
    _, _, extra = run.load_run(checkpoint)
    kwargs = {"num_classes": len(extra["class_names"])}
    if config.width_mult is not None:
        kwargs["width_mult"] = config.width_mult
    architecture = {"model": config.model, "kwargs": kwargs, "channels": pruned.pruned_channels}
    out = pathlib.Path(args.out).expanduser() if args.out else checkpoint.with_name("pruned.npz")
    if checkpoint.is_dir():
        out = pathlib.Path(args.out).expanduser() if args.out else checkpoint / "pruned.npz"
    prune.save_pruned(out, pruned, config.model, extra={**extra, "architecture": architecture}, **kwargs)
    if args.json:
        print(json.dumps({"checkpoint": str(checkpoint), "out": str(out), "amount": args.amount,
                          "criterion": args.criterion, "threshold": args.threshold, "tied": args.tied,
                          "channels": pruned.pruned_channels,
                          "results": [{"model": name, "accuracy": accuracy, "params": params, "macs": macs,
                                       "seconds_per_image": seconds} for name, accuracy, params, macs, seconds in rows]},
                         indent=1))
        return 0
    rule = f"score < {args.threshold:g}" if args.threshold is not None else f"{args.amount:g} of each group"
    print(f"{checkpoint}: {config.model}, {len(pruned.pruned_channels)} channel groups pruned by "
          f"{args.criterion} ({rule}), {len(val_loader.labels)} validation images")
    print(f"{'':<7} {'accuracy':>9} {'params':>11} {'MACs':>13} {'ms / image':>11}")
    for name, accuracy, params, macs, seconds in rows:
        print(f"{name:<7} {100 * accuracy:8.2f}% {params:>11,} {macs:>13,} {1000 * seconds:>11.3f}")
    print(f"wrote {out}; fine-tune it: tinycnn train --model {config.model}"
          + (f" --width-mult {config.width_mult:g}" if config.width_mult is not None else "")
          + f" --data {config.data}" + (f" --max-images {config.max_images}" if config.max_images else "")
          + f" --weights {out} --epochs 3")
    return 0

# ------------------------------------------------------------------------------------------- parser
COMMANDS = [_add_bench_parser, _add_summary_parser, _add_train_parser, _add_evaluate_parser,
            _add_predict_parser, _add_exercises_parser]
COMMANDS += [_add_quantize_parser, _add_prune_parser]


def build_parser():
    """The top-level parser with one sub-parser per entry of :data:`COMMANDS`."""
    parser = _Parser(
        prog="tinycnn",
        description="tinycnn: a from-scratch NumPy + numba CNN engine for learning lightweight CNNs.",
        epilog="Run 'tinycnn COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"tinycnn {tinycnn.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line (also after COMMAND)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def main(argv=None):
    """Entry point of the ``tinycnn`` console script; returns the process exit code.

    The one place where errors become messages: any exception a command raises ends as one line on
    stderr and exit code 2 (bad input, :data:`_BAD_INPUT_ERRORS`) or 1 (a failure during the run);
    ``--debug`` re-raises it so the traceback shows.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    debug = args.debug or "--debug" in unknown      # accepted after the command too
    unknown = [item for item in unknown if item != "--debug"]
    if unknown:   # report against the sub-command that was meant, so its --help is the one suggested
        prog = getattr(args, "prog", parser.prog)
        _fail(prog, f"unrecognized arguments: {' '.join(unknown)} (see '{prog} --help')")
    prog = getattr(args, "prog", f"tinycnn {args.command}")
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:      # noqa: BLE001 -- the one place that turns every error into one line
        if debug:
            raise
        if isinstance(error, _BAD_INPUT_ERRORS):
            _fail(prog, error)
        one_line = " ".join(str(error).split()) or "(no message)"
        print(f"{prog}: error: {type(error).__name__}: {one_line} (run again with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_FAILURE
