"""A whole training run from a configuration: what ``tinycnn train``, ``evaluate`` and ``predict`` do.

::

    from tinycnn import run
    result = run.run_training(run.TrainConfig(epochs=5, data="shapes:2000"), out_dir="runs/quick")
    model, config, extra = run.load_run("runs/quick")                 # best.npz, evaluation mode
    evaluation, class_names, config = run.evaluate_run("runs/quick")  # its validation images again

A :class:`TrainConfig` names everything a run depends on (model, data spec, optimisation, transfer
learning) and is saved inside every checkpoint, so a run can be resumed, evaluated or used for
prediction from its folder alone. The steps, each written once:

* :meth:`TrainConfig.resolved` -- check every field and fill the automatic choices (width multiplier,
  image size per data kind);
* :func:`load_config_data` -- the one ``load_dataset`` call for a run (training and ``evaluate_run``);
* :func:`build_model` -- ``get_model`` with the run's class count and width;
* :func:`run_training` -- data, model, optimizer, schedule, :class:`~tinycnn.train.Trainer`, plots, summary.

It sits above :mod:`tinycnn.train` (the Trainer), :mod:`tinycnn.evaluate`, :mod:`tinycnn.transfer` and
:mod:`tinycnn.plots`; :mod:`tinycnn.cli` imports it.
"""
import dataclasses
import json
import math
import numbers
import os
import pathlib
import time
from typing import NamedTuple, Optional

import numpy as np

from . import compile_ahead, io, losses, models, nn
from .data import (Compose, DataLoader, Normalize, RandomCrop, RandomHorizontalFlip, compute_mean_std,
                   load_dataset, parse_data_spec, to_float32)
from .evaluate import evaluate_model
from .plots import write_report
from ._system import cpu_description
from .runlock import RunLock
from .train import (BEST_CHECKPOINT, CHECKPOINT_KIND, HISTORY_CSV, HISTORY_JSON, LAST_CHECKPOINT, OPTIMIZERS,
                    SCHEDULES, Trainer, make_optimizer, make_scheduler)
from .transfer import freeze_backbone, load_pretrained, zero_init_residual_
from .prune import PRUNED_KIND, apply_channel_config, read_architecture   # pruned runs (tinycnn prune)

__all__ = ["TrainConfig", "RunResult", "build_model", "has_width_mult", "load_config_data", "run_training",
           "load_run", "find_latest_run", "load_images", "predict_images", "evaluate_run", "training_normalization",
           "AUGMENTATIONS", "VAL_SOURCES", "DEFAULT_WIDTH_MULT", "DEFAULT_IMAGE_SIZE"]

AUGMENTATIONS = ("auto", "none", "flip", "crop", "crop+flip")
VAL_SOURCES = ("split", "test")    # validation images: a held-out share of the training files, or the test files
DEFAULT_WIDTH_MULT = 0.5      # for models with a width multiplier, when none is given: fast on two cores
# Image side per data kind when none is given: the native 32 x 32 of shapes and CIFAR-10, MNIST resized from 28;
# photos in a folder keep a little more detail at 64 x 64.
DEFAULT_IMAGE_SIZE = {"shapes": 32, "folder": 64, "mnist": 32, "fashion": 32, "cifar10": 32}




@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (``tinycnn train``'s options); saved in its checkpoints.

    The defaults are the README's main job: a small MobileNet V2 on the built-in shapes dataset that
    reaches >= 90% validation accuracy in under three minutes on two CPU cores.
    """
    model: str = "mobilenet_v2"
    width_mult: Optional[float] = None  # None: DEFAULT_WIDTH_MULT for models that have a width multiplier
    data: str = "shapes"
    image_size: Optional[int] = None    # None: DEFAULT_IMAGE_SIZE of the data kind
    classes: Optional[list] = None
    val_fraction: float = 0.2           # the common 8:2 split
    val_source: str = "split"           # "test": validate on the official test files (MNIST, CIFAR-10)
    max_images: Optional[int] = None
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"             # "sgd", "adam" or "adamw" (make_optimizer)
    lr: float = 0.01
    weight_decay: Optional[float] = None
    schedule: str = "cosine"
    augment: str = "auto"
    label_smoothing: float = 0.0
    seed: int = 0
    zero_init_residual: bool = True     # start residual blocks as the identity (see zero_init_residual_)
    weights: Optional[str] = None
    freeze_backbone: bool = False

    @property
    def data_kind(self):
        """The kind of the data spec: ``"shapes"``, ``"mnist"``, ``"fashion"``, ``"cifar10"`` or ``"folder"``."""
        return parse_data_spec(self.data)[0]

    def resolved(self):
        """:meth:`check`, then a copy with the automatic choices made: ``width_mult`` and ``image_size``.

        Idempotent: a resolved configuration (the one saved in a checkpoint) resolves to itself.
        """
        self.check()
        width = self.width_mult
        if width is None and has_width_mult(self.model):
            width = DEFAULT_WIDTH_MULT
        size = DEFAULT_IMAGE_SIZE.get(self.data_kind, 32) if self.image_size is None else self.image_size
        return dataclasses.replace(self, width_mult=width, image_size=size)

    def check(self):
        """Raise ``ValueError`` naming the first bad field (also a bad data spec); return ``self``."""
        positive_ints = ("epochs", "batch_size") + (("image_size",) if self.image_size is not None else ())
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if not (isinstance(self.lr, numbers.Real) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number; got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {self.augment!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1); got {self.label_smoothing!r}")
        parse_data_spec(self.data)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1); got {self.val_fraction!r}")
        if self.val_source not in VAL_SOURCES:
            raise ValueError(f"val_source must be one of {', '.join(VAL_SOURCES)}; got {self.val_source!r}")
        if not has_width_mult(self.model) and self.width_mult is not None:      # also: unknown model
            raise ValueError(f"{self.model} has no width multiplier; leave --width-mult out")
        if self.freeze_backbone and self.weights is None:
            raise ValueError("freeze_backbone needs pretrained weights (--weights PATH): a frozen random "
                             "backbone learns nothing")
        return self

    def to_dict(self):
        """The fields as a plain dict (what a checkpoint's ``extra["config"]`` holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """A configuration from :meth:`to_dict`'s output; unknown keys (from other versions) are ignored."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def has_width_mult(name):
    """Does model ``name`` take a ``width_mult`` argument? ``ValueError`` for an unknown model."""
    return "width_mult" in models.model_arguments(name)


def build_model(name, num_classes, width_mult=None):
    """``get_model(name, num_classes=..., width_mult=...)``; ``width_mult=None`` keeps the model's own."""
    kwargs = {"num_classes": int(num_classes)}
    if width_mult is not None:
        if not has_width_mult(name):
            raise ValueError(f"{name} has no width multiplier; leave --width-mult out")
        kwargs["width_mult"] = float(width_mult)
    return models.get_model(name, **kwargs)


def _augmentation(config, data_kind, image_size):
    """The training transforms (before normalisation) for ``config.augment``."""
    choice = config.augment
    if choice == "auto":
        # shapes are already drawn at random positions, sizes and colours; digits must not be mirrored
        choice = {"shapes": "none", "mnist": "crop", "fashion": "crop+flip"}.get(data_kind, "crop+flip")
    padding = max(1, image_size // 8)                    # 4 pixels at 32 x 32, the ResNet/CIFAR recipe
    transforms = []
    if "crop" in choice:
        transforms.append(RandomCrop(image_size, padding=padding))
    if "flip" in choice:
        transforms.append(RandomHorizontalFlip())
    return transforms, choice


def load_config_data(config, data=None):
    """The run's images: the one ``load_dataset`` call for a configuration (training and evaluation).

    Parameters
    ----------
    config : TrainConfig, resolved (its ``image_size`` set)
    data : str, optional
        Another data spec with the same classes; then its training files are split with the run's
        ``val_fraction`` and seed (no ``val_source="test"``, no ``max_images``).

    Returns
    -------
    :class:`tinycnn.data.LoadedData` with RGB images (a 1-channel set is repeated over 3 channels).
    """
    own = data is None
    return load_dataset(config.data if own else data, image_size=config.image_size,
                        val_fraction=config.val_fraction, seed=config.seed, to_rgb=True, classes=config.classes,
                        val_source=config.val_source if own else "split",
                        max_images=config.max_images if own else None)


def training_normalization(images):
    """Per-channel ``(mean, std)`` of training images (N, C, H, W), the std floored at 1e-3 (a constant
    channel would divide by zero): the normalisation ``tinycnn train`` uses and stores with a run."""
    mean, std = compute_mean_std(images)
    return mean, np.maximum(std, 1e-3)


def _prepare_data(config):
    """Load, split and normalise the data of ``config``: (train_loader, val_loader, LoadedData, info)."""
    data = load_config_data(config)
    if len(data.class_names) < 2:
        raise ValueError(f"dataset {config.data!r} has {len(data.class_names)} class ({', '.join(data.class_names)}): "
                         f"a classifier needs at least two (an image folder needs one sub-folder per class)")
    if len(data.train) == 0 or len(data.val) == 0:
        raise ValueError(f"dataset {config.data!r} is too small to split into training and validation parts")
    if len(data.train) < 2:         # batch norm in training needs two values per channel in a batch
        raise ValueError(f"too few images: dataset {config.data!r} leaves {len(data.train)} training image; "
                         f"training needs at least 2 (batch norm normalises over the batch)")
    mean, std = training_normalization(data.train.images)
    normalize = Normalize(mean, std)
    augment, augment_name = _augmentation(config, config.data_kind, config.image_size)
    train_loader = DataLoader(data.train.images, data.train.labels, config.batch_size, shuffle=True,
                              seed=config.seed, transform=Compose(augment + [normalize]),
                              drop_last=len(data.train) > config.batch_size)
    val_loader = DataLoader(data.val.images, data.val.labels, max(config.batch_size, 128), transform=normalize)
    info = {"class_names": list(data.class_names), "mean": mean.tolist(), "std": std.tolist(),
            "augment": augment_name, "train_images": len(data.train), "val_images": len(data.val)}
    return train_loader, val_loader, data, info


class RunResult(NamedTuple):
    """What :func:`run_training` returns."""
    trainer: Trainer
    data: object            # tinycnn.data.LoadedData
    info: dict              # class names, normalisation, image counts, timings, files written
    files: list             # paths written


def _make_trainer(config, out_dir, progress, log):
    """The :class:`~tinycnn.train.Trainer` of a resolved ``config``: (trainer, LoadedData, info)."""
    nn.init.manual_seed(config.seed)
    train_loader, val_loader, data, info = _prepare_data(config)
    model = build_model(config.model, len(data.class_names), config.width_mult)
    if config.zero_init_residual:
        zero_init_residual_(model)
    architecture = _pruned_architecture(config)
    if architecture is not None:                 # pruned weights: rebuild their smaller network first
        apply_channel_config(model, architecture["channels"])
    if config.weights is not None:
        loaded = load_pretrained(model, config.weights)
        info["pretrained"] = {"weights": str(config.weights), "loaded": len(loaded["loaded"]),
                              "replaced": loaded["replaced"]}
    params = freeze_backbone(model) if config.freeze_backbone else model
    optimizer = make_optimizer(config.optimizer, params, config.lr, config.weight_decay)
    scheduler = make_scheduler(config.schedule, optimizer, config.epochs * len(train_loader))
    trainer = Trainer(model, optimizer, train_loader, val_loader, epochs=config.epochs,
                      criterion=losses.CrossEntropyLoss(label_smoothing=config.label_smoothing),
                      scheduler=scheduler, out_dir=out_dir, frozen_backbone=config.freeze_backbone,
                      progress=progress, log=log,
                      extra={"config": config.to_dict(), **{k: info[k] for k in ("class_names", "mean", "std")},
                             "image_size": config.image_size,
                             **({"architecture": architecture} if architecture is not None else {})})
    return trainer, data, info


def _pruned_architecture(config):
    """The pruned architecture stored with ``config.weights`` (``tinycnn prune``'s output), or None."""
    if config.weights is None or pathlib.Path(config.weights).suffix in (".pth", ".pt"):
        return None
    architecture = read_architecture(pathlib.Path(config.weights).expanduser())
    if architecture is not None and (architecture.get("model") != config.model
                                     or architecture.get("kwargs", {}).get("width_mult") != config.width_mult):
        raise ValueError(f"{config.weights} holds a pruned {architecture.get('model')} (width "
                         f"{architecture.get('kwargs', {}).get('width_mult')}); train it with the same --model and "
                         f"--width-mult")
    return architecture


def _kernels_compiled():
    """True when the numba cache holds the convolution and batch-norm kernels a training step runs."""
    from kernels import _gemm, _jit, batchnorm, depthwise
    return _jit.compiled_on_this_machine(depthwise._forward_channels_last_kernel,
                                         depthwise._backward_channels_last_kernel,
                                         depthwise._forward_flat_stacked3x3_kernel,
                                         depthwise._backward_weight_flat_kernel,
                                         depthwise._weight_gradient_dots_kernel,
                                         depthwise._forward_one_pixel_kernel, depthwise._backward_one_pixel_kernel,
                                         _gemm._batched_matmul_kernel, batchnorm.batch_norm_train_forward_kernel,
                                         batchnorm.batch_norm_statistics_kernel)


def run_training(config=None, out_dir="runs/train", resume=False, progress=True, log=print, plots=True,
                 tsne=True, feature_layer=None):
    """Train as ``tinycnn train`` does: data, model, optimizer, schedule, :class:`~tinycnn.train.Trainer`, report.

    Parameters
    ----------
    config : TrainConfig (default: the defaults); checked and resolved here (:meth:`TrainConfig.resolved`).
        Ignored when resuming (the checkpoint's is used).
    out_dir : folder for checkpoints, history, plots and ``summary.json``
    resume : bool -- continue from ``out_dir/last.npz``
    progress, log : as :class:`~tinycnn.train.Trainer`; ``log`` also gets a first line naming the run
    plots : bool -- write the PNG report (:func:`tinycnn.plots.write_report`) of the best epoch's model;
        ``trainer.model`` then holds the best weights (``best.npz``)
    tsne, feature_layer : passed to the report

    Returns
    -------
    RunResult(trainer, data, info, files). ``info["summary"]`` is what ``summary.json`` holds.

    Raises
    ------
    tinycnn.runlock.RunFolderBusy
        Another living run holds ``out_dir`` (its ``run.lock``); the message names the holder's pid.
    ValueError
        ``out_dir`` already holds a run (``last.npz``) and ``resume`` is False.
    """
    out_dir = pathlib.Path(out_dir).expanduser()
    if resume and not (out_dir / LAST_CHECKPOINT).exists():        # before the lock creates the folder
        raise FileNotFoundError(f"nothing to resume: {out_dir / LAST_CHECKPOINT} does not exist")
    with RunLock(out_dir) as lock:            # the run owns its folder until it returns (tinycnn.runlock)
        if lock.note and log is not None:
            log(lock.note)
        if not resume and (out_dir / LAST_CHECKPOINT).exists():
            raise ValueError(f"{out_dir} already holds a run: resume it or choose another folder")
        return _run_training_locked(config, out_dir, resume, progress, log, plots, tsne, feature_layer)


def _run_training_locked(config, out_dir, resume, progress, log, plots, tsne, feature_layer):
    """The body of :func:`run_training`, run while holding the folder's lock."""
    started = time.perf_counter()
    checkpoint = None
    if resume:
        last = out_dir / LAST_CHECKPOINT
        if not last.exists():
            raise FileNotFoundError(f"nothing to resume: {last} does not exist")
        checkpoint = io.load_checkpoint(last)
        if checkpoint.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{last} is not a tinycnn training checkpoint")
        config = TrainConfig.from_dict(checkpoint["extra"]["config"])
    config = (TrainConfig() if config is None else config).resolved()
    cold = not _kernels_compiled()
    # on a cold numba cache a second process compiles the gradient kernels meanwhile (tinycnn.compile_ahead),
    # started before the data are loaded, so that it is ahead
    helper = compile_ahead.start(config) if cold else None
    try:
        if log is not None and checkpoint is None:
            width = "" if config.width_mult is None else f" (width {config.width_mult:g})"
            log(f"training {config.model}{width} on {config.data} at {config.image_size}x{config.image_size} for "
                f"{config.epochs} epochs -> {out_dir}")
        trainer, data, info = _make_trainer(config, out_dir, progress, log)
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint)
            if log is not None:
                log(f"resuming {out_dir} at epoch {trainer.epoch + 1}"
                    + (f", batch {trainer.train_loader.state_dict()['batch'] + 1}" if trainer._partial else ""))
        setup_seconds = time.perf_counter() - started
        if log is not None and cold:
            log("compiling kernels, once per machine (numba caches them; the first batches wait a minute or two"
                + (", a second process helps" if helper is not None else "") + ")...")
        trainer.fit()
    finally:
        compile_ahead.stop(helper)

    files = [out_dir / LAST_CHECKPOINT, out_dir / BEST_CHECKPOINT, out_dir / HISTORY_JSON, out_dir / HISTORY_CSV]
    best_evaluation = trainer.best_evaluation
    report_seconds = 0.0
    if plots:
        report_started = time.perf_counter()
        if trainer.best["epoch"] != trainer.epoch:
            # every plot shows the best epoch's model (best.npz), not the last one's
            trainer.model.load_state_dict(io.load_checkpoint(out_dir / BEST_CHECKPOINT)["model"])
        if best_evaluation is None:                                  # the best epoch ran before a resume
            best_evaluation = trainer.evaluate(features=True)
        files += write_report(out_dir, trainer.history, trainer.model, best_evaluation, data.class_names,
                              sample_image=trainer.val_loader.images[0],
                              normalize=trainer.val_loader.transform, tsne=tsne, feature_layer=feature_layer)
        report_seconds = time.perf_counter() - report_started
    total_seconds = time.perf_counter() - started
    last_row = trainer.history[-1]
    summary = {
        "model": config.model, "width_mult": config.width_mult, "data": config.data,
        "classes": list(data.class_names), "train_images": info["train_images"], "val_images": info["val_images"],
        "image_size": config.image_size, "epochs": trainer.epoch,
        "best_epoch": trainer.best["epoch"], "best_val_accuracy": trainer.best["val_accuracy"],
        "best_val_loss": trainer.best["val_loss"], "final_val_accuracy": last_row["val_accuracy"],
        "final_train_accuracy": last_row["train_accuracy"],
        "train_seconds": trainer.train_seconds,
        "images_per_second": sum(r["images_per_second"] * r["epoch_seconds"] for r in trainer.history)
        / max(sum(r["epoch_seconds"] for r in trainer.history), 1e-9),
        "setup_seconds": setup_seconds, "report_seconds": report_seconds, "total_seconds": total_seconds,
        "cpu": cpu_description(),            # timings depend on the CPU's vector width (AVX2 vs AVX-512)
        "parameters": int(sum(p.size for p in trainer.model.parameters())),
        "config": config.to_dict(), "augment": info["augment"], "pretrained": info.get("pretrained"),
        "files": [str(path) for path in files] + [str(out_dir / "summary.json")],
    }
    io.write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    files.append(out_dir / "summary.json")
    info["summary"] = summary
    return RunResult(trainer, data, info, files)


def load_run(checkpoint_path):
    """A trained model and what is needed to use it, from a :class:`~tinycnn.train.Trainer` checkpoint.

    Returns
    -------
    (model, config, extra): the model (evaluation mode) with the checkpoint's weights, its
    :class:`TrainConfig`, and the checkpoint's ``extra`` dict (``class_names``, ``mean``, ``std``,
    ``image_size``).
    """
    path = pathlib.Path(checkpoint_path).expanduser()
    if path.is_dir():
        path = path / BEST_CHECKPOINT if (path / BEST_CHECKPOINT).exists() else path / LAST_CHECKPOINT
    checkpoint = io.load_checkpoint(path)
    if checkpoint.get("kind") not in (CHECKPOINT_KIND, PRUNED_KIND) or "config" not in checkpoint.get("extra", {}):
        raise ValueError(f"{path} is not a checkpoint written by 'tinycnn train' or 'tinycnn prune'")
    extra = checkpoint["extra"]
    config = TrainConfig.from_dict(extra["config"])
    model = build_model(config.model, len(extra["class_names"]), config.width_mult)
    if "architecture" in extra:                  # a pruned network (tinycnn prune): rebuild its channels
        apply_channel_config(model, extra["architecture"]["channels"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config, extra


def find_latest_run(root="runs", name=BEST_CHECKPOINT):
    """The most recently written ``root/*/name`` (e.g. ``runs/train/best.npz``), or None."""
    root = pathlib.Path(root)
    candidates = [path for path in root.glob(f"*/{name}") if path.is_file()] if root.is_dir() else []
    return max(candidates, key=lambda path: path.stat().st_mtime) if candidates else None


def load_images(paths, image_size):
    """Image files -> (N, 3, S, S) uint8, decoded and resized as the image-folder loader does."""
    from .data.folder import _load_image      # the image-folder loader's decoder (needs Pillow)

    images = []
    for path in paths:
        if os.path.isdir(path):
            raise ValueError(f"{path} is a folder, not an image file: give the images (e.g. {path}/*.png)")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such image file: {path}")
        images.append(_load_image(path, image_size))
    return np.stack(images)


def predict_images(model, extra, images, top=3, batch_size=64):
    """Class probabilities of raw images with a trained run's normalisation.

    Parameters
    ----------
    model : Module (evaluation mode), extra : the checkpoint's ``extra`` (:func:`load_run`)
    images : (N, 3, S, S) uint8 or float in [0, 1]
    top : how many classes to return per image

    Returns
    -------
    list (one per image) of ``[(class_name, probability), ...]``, most probable first
    """
    normalize = Normalize(extra["mean"], extra["std"])
    names = extra["class_names"]
    results = []
    model.eval()
    for start in range(0, len(images), batch_size):
        x = normalize(to_float32(images[start:start + batch_size])).astype(np.float32)   # (B, 3, S, S)
        with nn.no_grad():                                                              # inference only
            logits = model(x)                                                           # (B, K)
        probabilities = losses.softmax(logits.astype(np.float64), axis=1)
        for row in probabilities:
            order = np.argsort(-row)[:top]
            results.append([(names[k], float(row[k])) for k in order])
    return results


def evaluate_run(checkpoint_path, data=None, split="val", batch_size=128):
    """Evaluate a trained run on its validation split (or ``split="train"``/``"all"``, or other ``data``).

    The split is rebuilt from the run's configuration (same spec, image size, classes and seed), so
    ``split="val"`` is exactly the data the run validated on. Returns ``(Evaluation, class_names, config)``.
    """
    if split not in ("val", "train", "all"):
        raise ValueError(f"split must be 'val', 'train' or 'all'; got {split!r}")
    model, config, extra = load_run(checkpoint_path)
    loaded = load_config_data(config, data)
    if tuple(loaded.class_names) != tuple(extra["class_names"]):
        raise ValueError(f"the data's classes {list(loaded.class_names)} differ from the model's "
                         f"{list(extra['class_names'])}")
    parts = {"val": [loaded.val], "train": [loaded.train], "all": [loaded.train, loaded.val]}[split]
    images = np.concatenate([part.images for part in parts])
    labels = np.concatenate([part.labels for part in parts])
    loader = DataLoader(images, labels, batch_size, transform=Normalize(extra["mean"], extra["std"]))
    return evaluate_model(model, loader, features=False), tuple(extra["class_names"]), config
