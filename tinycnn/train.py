"""Training: a :class:`Trainer` for any tinycnn model, and :func:`run_training` behind ``tinycnn train``.

The loop is the one every deep-learning course writes by hand, with the bookkeeping a real run needs::

    for epoch in range(epochs):
        model.train()
        for x, y in train_loader:                 # x (B, C, H, W) float32, y (B,) int64
            model.zero_grad()
            loss = criterion(model(x), y)         # forward: logits (B, K) -> mean cross-entropy
            model.backward(criterion.backward())  # backward: dL/dlogits (B, K) -> every Parameter.grad
            optimizer.step()                      # p -= lr * update(p.grad)
            scheduler.step()                      # the next step's learning rate
        validate()                                # eval mode: batch norm uses its running statistics

What :class:`Trainer` adds around it:

* **progress** -- a tqdm bar per epoch showing the running loss, accuracy and images per second, and
  one line per epoch with the training and validation metrics;
* **history** -- one row per epoch in ``history.json`` and ``history.csv`` (plots read these);
* **checkpoints** -- ``last.npz`` after every epoch and ``best.npz`` when the validation accuracy
  improves, each holding the model, optimizer, scheduler, data-loader position, epoch, history and the
  random-generator state (dropout masks), written atomically by :func:`tinycnn.io.save_checkpoint`
  (a crash mid-write leaves the previous file intact);
* **exact resume** -- :meth:`Trainer.resume` restores all of that, so training 2 epochs gives the same
  weights, bit for bit, as training 1 epoch, stopping, resuming and training 1 more;
* **Ctrl-C** -- the first Ctrl-C finishes the current step, saves ``last.npz`` (mid-epoch: the loader
  remembers which batches are done) and raises :class:`TrainingInterrupted`; a second one stops at once;
* **divergence** -- a NaN or infinite loss stops training with :class:`TrainingDiverged`, whose message
  says where it happened and what to try; the last good checkpoint is kept.

Transfer learning, as in the seed articles' 2-class MobileNetV2 example: :func:`load_pretrained` copies
every weight of a saved model (our ``.npz``, a checkpoint, or a torchvision ``.pth``) except the final
classifier layer, which the new model has built for its own number of classes; ``freeze_backbone=True``
trains that layer alone, with the rest of the network in evaluation mode (a fixed feature extractor).
"""
import copy
import dataclasses
import json
import math
import numbers
import os
import pathlib
import signal
import sys
import threading
import time
from typing import NamedTuple, Optional

import numpy as np

from . import io, losses, nn, optim

__all__ = ["Trainer", "TrainConfig", "Evaluation", "TrainingDiverged", "TrainingInterrupted", "RunResult",
           "evaluate_model", "confusion_matrix", "find_classifier", "load_pretrained", "freeze_backbone",
           "zero_init_residual_",
           "make_optimizer", "make_scheduler", "build_model", "run_training", "load_run", "find_latest_run",
           "load_images", "predict_images", "evaluate_run",
           "CHECKPOINT_KIND", "LAST_CHECKPOINT", "BEST_CHECKPOINT"]

CHECKPOINT_KIND = "tinycnn-train"       # checkpoint["kind"]: marks a Trainer checkpoint
LAST_CHECKPOINT = "last.npz"            # file names inside the output folder
BEST_CHECKPOINT = "best.npz"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "epoch_seconds", "images_per_second", "elapsed_seconds")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped before the update that would spread it."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Trainer.fit`, after ``last.npz`` was saved; ``.checkpoint`` is its path."""

    def __init__(self, message, checkpoint=None):
        super().__init__(message)
        self.checkpoint = checkpoint


# ----------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------
class Evaluation(NamedTuple):
    """What :func:`evaluate_model` returns.

    loss : float, mean cross-entropy over the images
    accuracy : float in [0, 1]
    logits : (N, K) float32
    labels : (N,) int64
    features : (N, D) float32 or None -- the input of the final classifier layer (the penultimate
        features an embedding plot shows), when asked for
    """
    loss: float
    accuracy: float
    logits: np.ndarray
    labels: np.ndarray
    features: Optional[np.ndarray] = None

    @property
    def predictions(self):
        """(N,) int64: the arg-max class of every image."""
        return self.logits.argmax(axis=1)


def find_classifier(model):
    """``(name, module)`` of the model's final classifier layer: the last ``Linear`` or ``Conv2d``.

    Every model of the zoo ends with its classifier (``classifier.1`` of MobileNet V2, ``classifier.3``
    of MobileNet V3, ``fc`` of ResNet and ShuffleNet, the 1x1 ``classifier.1`` conv of SqueezeNet), and
    registers it last, so "the last layer with weights in registration order" finds it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a tinycnn.nn.Module; got {type(model).__name__}")
    found = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            found = (name, module)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv2d layer to use as its classifier")
    return found


def evaluate_model(model, loader, criterion=None, features=False):
    """Run ``model`` in evaluation mode over every batch of ``loader``.

    Parameters
    ----------
    model : Module mapping (B, C, H, W) images to (B, K) logits
    loader : iterable of ``(x, y)`` batches (a :class:`tinycnn.data.DataLoader` without shuffling)
    criterion : loss with ``reduction='mean'``; default cross-entropy
    features : bool
        Also record the input of the final classifier layer (:func:`find_classifier`), flattened to
        (B, D), with a forward hook.

    Returns
    -------
    Evaluation(loss, accuracy, logits (N, K), labels (N,), features (N, D) or None)

    The model is left in evaluation mode; the loss is averaged per image (each batch weighted by its size).
    """
    criterion = losses.CrossEntropyLoss() if criterion is None else criterion
    model.eval()
    captured = []
    handle = None
    if features:
        _, head = find_classifier(model)
        handle = head.register_forward_hook(
            lambda module, inputs, output: captured.append(inputs[0].reshape(len(inputs[0]), -1).copy()))
    all_logits, all_labels, loss_sum = [], [], 0.0
    try:
        for x, y in loader:
            logits = model(x)                                   # (B, K)
            loss_sum += float(criterion(logits, y)) * len(y)
            all_logits.append(np.asarray(logits, dtype=np.float32))
            all_labels.append(y)
    finally:
        if handle is not None:
            handle.remove()
    if not all_labels:
        raise ValueError("evaluate_model: the loader produced no batches")
    logits, labels = np.concatenate(all_logits), np.concatenate(all_labels)
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    feature_array = np.concatenate(captured).astype(np.float32) if features else None
    return Evaluation(loss_sum / len(labels), accuracy, logits, labels, feature_array)


def confusion_matrix(labels, predictions, num_classes):
    """``(K, K)`` int64 matrix: entry ``[i, j]`` counts images of class ``i`` predicted as class ``j``.

    The diagonal holds the correct predictions; row ``i`` sums to the number of images of class ``i``.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels and predictions must be 1-D of the same length; got {labels.shape} "
                         f"and {predictions.shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must be in [0, {num_classes}); got values in [{values.min()}, {values.max()}]")
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)   # one bin per (true, predicted)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


# ----------------------------------------------------------------------------------------------------
# Transfer learning
# ----------------------------------------------------------------------------------------------------
def _read_weights(source):
    """A state dict from a path (``.npz`` weights or checkpoint, ``.pth``/``.pt``) or a mapping."""
    if isinstance(source, (str, os.PathLike)):
        path = pathlib.Path(source).expanduser()
        if path.suffix in (".pth", ".pt"):
            return io.convert_torch_state_dict(path)
        try:
            return io.load_weights(path)
        except ValueError as error:
            if "is a checkpoint" not in str(error):
                raise
            checkpoint = io.load_checkpoint(path)               # a Trainer checkpoint: take its model
            if not isinstance(checkpoint.get("model"), dict):
                raise ValueError(f"{path} is a checkpoint without a 'model' entry") from None
            return checkpoint["model"]
    if hasattr(source, "keys"):
        return io.convert_torch_state_dict(source)
    raise TypeError(f"weights must be a path or a state dict; got {type(source).__name__}")


def load_pretrained(model, weights):
    """Copy pretrained weights into ``model``, all but a final classifier built for other classes.

    Parameters
    ----------
    model : Module, built for the new task (``get_model(name, num_classes=2)``)
    weights : path or mapping
        Our ``.npz`` weights, a :class:`Trainer` checkpoint (its ``model`` entry), a torchvision
        ``.pth`` state dict (needs PyTorch, see :func:`tinycnn.io.convert_torch_state_dict`) or a
        state dict.

    Returns
    -------
    dict with ``"loaded"`` (names copied) and ``"replaced"`` (the classifier's names that kept the new
    model's fresh initialisation because their shapes differ: a new number of classes).

    Every other entry must match by name and shape, else ``ValueError`` names the first few that do not
    (weights of another architecture or width). Nothing is changed unless the check passes.
    """
    state = _read_weights(weights)
    head_name, _ = find_classifier(model)
    head_prefix = f"{head_name}." if head_name else ""
    own = model.state_dict()
    replaced, problems = [], []
    for key, value in own.items():
        if key not in state:
            if key.rsplit(".", 1)[-1] != "num_batches_tracked":
                problems.append(f"missing {key}")
        elif np.shape(state[key]) != value.shape:
            if key.startswith(head_prefix):
                replaced.append(key)
            else:
                problems.append(f"{key} has shape {np.shape(state[key])} in the weights, {value.shape} in the model")
    problems += [f"unexpected {key}" for key in state if key not in own]
    if problems:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise ValueError(f"the weights do not fit {type(model).__name__}: {'; '.join(problems[:4])}{more}. "
                         f"Are they for the same model and --width-mult?")
    loadable = {key: state[key] for key in own if key in state and key not in replaced}
    model.load_state_dict(loadable, strict=False)
    return {"loaded": list(loadable), "replaced": replaced}


def freeze_backbone(model):
    """Put every layer but the final classifier in evaluation mode; return the classifier's parameters.

    Give the returned list to the optimizer: only the classifier learns; batch norm keeps its
    pretrained running statistics (frozen layers in training mode would still update them).
    Our layers have no ``requires_grad``: ``model.backward`` would still send the gradient through the
    whole network (the frozen weights just never change). :class:`Trainer` with ``frozen_backbone=True``
    calls the classifier's own ``backward`` instead, when its output is the model's output (every
    model of the zoo but SqueezeNet, whose classifier conv is followed by ReLU and pooling), so a step
    costs little more than a forward pass. Call this again after every ``model.train()`` (the Trainer does).
    """
    head_name, head = find_classifier(model)
    related = lambda name: (name == head_name or head_name.startswith(f"{name}.") or name == ""   # noqa: E731
                            or name.startswith(f"{head_name}."))
    for name, module in model.named_modules():
        if not related(name):
            module.train(False)
    return list(head.parameters())


def zero_init_residual_(model):
    """Start every identity-shortcut block as the identity: zero the scale of its branch's last batch norm.

    A block computes ``y = x + BN(conv(...))``; with the final BN's ``weight`` (gamma) at 0 the branch
    outputs 0 and ``y = x``, so a deep network starts as a shallow one and signals and gradients pass
    through the shortcuts unchanged. Goyal et al. (arXiv:1706.02677, sec. 5.1) and the "bag of tricks"
    (He et al., arXiv:1812.01187) use it to train ResNets faster; on the shapes data it makes MobileNet V2
    reach 90% in about half the epochs. The gradient of gamma is not zero, so the branches wake up in the
    first steps.

    Applies to MobileNet V2's :class:`~tinycnn.nn.InvertedResidual` blocks with a shortcut and to
    :class:`~tinycnn.nn.Residual` with an identity shortcut. Returns the number of blocks changed.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.InvertedResidual) and module.use_res_connect:
            branch = module.conv
        elif isinstance(module, nn.Residual) and module.shortcut is None:
            branch = module.body
        else:
            continue
        norms = [m for m in branch.modules() if isinstance(m, nn.BatchNorm2d)]
        if norms and norms[-1].weight is not None:
            norms[-1].weight.data[...] = 0
            changed += 1
    return changed


# ----------------------------------------------------------------------------------------------------
# Optimizers and schedules by name
# ----------------------------------------------------------------------------------------------------
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adam": 0.0, "adamw": 0.05}
WARMUP_FRACTION = 0.05       # share of all steps spent warming the learning rate up (Goyal et al. 2017)


def make_optimizer(name, params_or_model, lr, weight_decay=None):
    """``sgd`` (momentum 0.9, Nesterov), ``adam`` or ``adamw`` over a model or a list of parameters.

    With a model, biases and batch-norm parameters get no weight decay
    (:func:`tinycnn.optim.param_groups_no_decay`). ``weight_decay=None`` takes
    :data:`DEFAULT_WEIGHT_DECAY` for the optimizer.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    weight_decay = DEFAULT_WEIGHT_DECAY[name] if weight_decay is None else weight_decay
    if isinstance(params_or_model, nn.Module):
        params = optim.param_groups_no_decay(params_or_model, weight_decay)
    else:
        params = [{"params": list(params_or_model), "weight_decay": weight_decay}]
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    if name == "adam":
        return optim.Adam(params, lr=lr)
    return optim.AdamW(params, lr=lr)


def make_scheduler(name, optimizer, total_steps):
    """A per-step schedule: ``cosine`` (5% linear warm-up, then cosine to 0), ``step`` (x0.1 at 50% and
    75% of the steps) or ``constant`` (None)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if name == "constant":
        return None
    if name == "cosine":
        warmup = int(WARMUP_FRACTION * total_steps) if total_steps >= 20 else 0
        return optim.warmup_cosine(optimizer, warmup_steps=warmup, total_steps=total_steps)
    half, three_quarters = max(1, total_steps // 2), max(2, (3 * total_steps) // 4)
    first = optim.StepLR(optimizer, step_size=10 ** 9, gamma=1.0)        # constant, as a formula
    second = optim.StepLR(optimizer, step_size=max(1, three_quarters - half), gamma=0.1)
    return optim.SequentialLR(optimizer, [first, second], milestones=[half])


# ----------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------
def _format_metrics(row):
    val = "" if row.get("val_accuracy") is None else \
        f"  val loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:5.1f}%"
    return (f"train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:5.1f}%{val}  "
            f"lr {row['lr']:.2e}  {row['images_per_second']:.0f} img/s  {row['epoch_seconds']:.1f} s")


class _InterruptFlag:
    """SIGINT handler for :meth:`Trainer.fit`: the first Ctrl-C sets a flag, the second one interrupts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:                       # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this step and saving a checkpoint (press again to stop at once)",
              flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class Trainer:
    """Train a classifier with validation every epoch, history, checkpoints and exact resume.

    Parameters
    ----------
    model : Module mapping (B, C, H, W) float32 images to (B, K) logits
    optimizer : a :mod:`tinycnn.optim` optimizer over (some of) the model's parameters
    train_loader : :class:`tinycnn.data.DataLoader` (its ``state_dict`` makes resuming exact)
    val_loader : DataLoader, optional -- evaluated after every epoch
    epochs : int >= 1, the total number of epochs (a resumed run counts the epochs already done)
    criterion : default ``CrossEntropyLoss()``
    scheduler : :class:`tinycnn.optim.LRScheduler`, optional, stepped after every batch
        (``scheduler_interval="step"``, the default) or every epoch (``"epoch"``)
    out_dir : path, optional -- where ``last.npz``, ``best.npz``, ``history.json`` and ``history.csv``
        go (created); without it nothing is written
    frozen_backbone : bool -- keep every layer but the classifier in evaluation mode (:func:`freeze_backbone`);
        when the classifier's output is the model's output, the backward pass stops at the classifier
    progress : bool -- tqdm progress bars (on stderr)
    log : callable(str) or None -- receives one line per epoch (default ``print``; None: silent)
    extra : dict, optional -- stored in every checkpoint under ``"extra"`` (e.g. the run's configuration,
        class names and normalisation, so a checkpoint can be used on its own)

    Attributes
    ----------
    epoch : epochs completed
    history : list of dicts, one per epoch, keys :data:`HISTORY_COLUMNS`
    best : {"epoch", "val_accuracy", "val_loss"} of the best epoch so far (or None)
    best_evaluation : :class:`Evaluation` (with features) of the best epoch, when it ran in this process
    """

    def __init__(self, model, optimizer, train_loader, val_loader=None, *, epochs=10, criterion=None,
                 scheduler=None, scheduler_interval="step", out_dir=None, frozen_backbone=False,
                 progress=True, log=print, extra=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a tinycnn.nn.Module; got {type(model).__name__}")
        if not hasattr(optimizer, "step") or not hasattr(optimizer, "state_dict"):
            raise TypeError(f"optimizer must be a tinycnn.optim optimizer; got {type(optimizer).__name__}")
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise ValueError(f"epochs must be a positive int; got {epochs!r}")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch'; got {scheduler_interval!r}")
        if len(train_loader) == 0:
            raise ValueError("train_loader has no batches (fewer images than batch_size with drop_last?)")
        self.model = model
        self.optimizer = optimizer
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.epochs = int(epochs)
        self.criterion = losses.CrossEntropyLoss() if criterion is None else criterion
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.out_dir = None if out_dir is None else pathlib.Path(out_dir)
        self.frozen_backbone = bool(frozen_backbone)
        self._head = find_classifier(model)[1] if self.frozen_backbone else None
        self.progress = bool(progress)
        self.log = log
        self.extra = {} if extra is None else dict(extra)
        self.epoch = 0
        self.history = []
        self.best = None
        self.best_evaluation = None
        self.train_seconds = 0.0            # time spent in training steps, over all sessions
        self._partial = None                # accumulators of an epoch interrupted mid-way

    # -- paths ---------------------------------------------------------------------------------------
    def path(self, name):
        """``out_dir / name`` (None without ``out_dir``)."""
        return None if self.out_dir is None else self.out_dir / name

    def _say(self, text):
        if self.log is print and self.progress:        # print above the progress bar, not through it
            from tqdm import tqdm
            tqdm.write(text)
        elif self.log is not None:
            self.log(text)

    # -- one epoch -----------------------------------------------------------------------------------
    def _set_train_mode(self):
        self.model.train()
        if self.frozen_backbone:
            freeze_backbone(self.model)

    def _current_lr(self):
        return float(self.optimizer.param_groups[0]["lr"])

    def _forward(self, x):
        """``(model(x), the classifier's output)``; the latter only with a frozen backbone, else None."""
        if self._head is None:
            return self.model(x), None
        captured = []
        handle = self._head.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        return logits, captured[-1] if captured else None

    def train_epoch(self, stop_flag=None):
        """Train one epoch (or its remaining batches after a mid-epoch resume).

        Returns a dict: ``loss``, ``accuracy`` (means over the epoch's images), ``images``, ``seconds``,
        ``lr`` (of the epoch's first step) and ``completed`` -- False when ``stop_flag.requested``
        became True (Ctrl-C) before the last batch; the accumulators are then kept for the checkpoint.
        """
        from tqdm import tqdm

        loader = self.train_loader
        if self._partial is None:                 # a new epoch; else the loader resumes mid-epoch
            loader.set_epoch(self.epoch)
            partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "lr": self._current_lr()}
        else:
            partial, self._partial = dict(self._partial), None
        first_batch = loader.state_dict()["batch"]
        self._set_train_mode()
        redraw_seconds = 0.1 if sys.stderr.isatty() else 10.0     # a log file (CI) gets a line every 10 s
        bar = tqdm(total=len(loader), initial=first_batch, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                   unit="batch", disable=not self.progress, leave=False, dynamic_ncols=True,
                   mininterval=redraw_seconds)
        started = time.perf_counter() - partial["seconds"]     # the clock includes earlier sessions
        completed = True
        try:
            for batch, (x, y) in enumerate(loader, start=first_batch):
                self.model.zero_grad()
                logits, head_output = self._forward(x)                  # (B, C, H, W) -> (B, K)
                loss = float(self.criterion(logits, y))
                if not math.isfinite(loss):
                    self._diverged(f"the training loss became {loss} at epoch {self.epoch + 1}, batch {batch + 1}")
                grad_logits = self.criterion.backward()                 # dL/dlogits (B, K)
                if head_output is logits:
                    # frozen backbone, and the classifier's output is the model's: only the classifier
                    # learns, so the gradient need not travel back through the backbone
                    self._head.backward(grad_logits)
                else:
                    self.model.backward(grad_logits)                    # -> every Parameter.grad
                self.optimizer.step()
                if self.scheduler is not None and self.scheduler_interval == "step":
                    self.scheduler.step()
                partial["loss_sum"] += loss * len(y)
                partial["correct"] += int(np.sum(logits.argmax(axis=1) == y))
                partial["seen"] += len(y)
                elapsed = time.perf_counter() - started
                bar.set_postfix(loss=f"{partial['loss_sum'] / partial['seen']:.3f}",
                                acc=f"{100 * partial['correct'] / partial['seen']:.1f}%",
                                img_s=f"{partial['seen'] / max(elapsed, 1e-9):.0f}", refresh=False)
                bar.update(1)                                           # redraws at most every redraw_seconds
                if stop_flag is not None and stop_flag.requested and batch + 1 < len(loader):
                    completed = False
                    break
        finally:
            bar.close()
        partial["seconds"] = time.perf_counter() - started
        if not completed:
            self._partial = partial
        seen = max(partial["seen"], 1)
        return {"loss": partial["loss_sum"] / seen, "accuracy": partial["correct"] / seen,
                "images": partial["seen"], "seconds": partial["seconds"], "lr": partial["lr"],
                "completed": completed}

    def _diverged(self, what):
        """Raise :class:`TrainingDiverged`: ``what`` says which loss became what, and where."""
        last = self.path(LAST_CHECKPOINT)
        kept = f"; the last good checkpoint is {last}" if last is not None and last.exists() else ""
        raise TrainingDiverged(
            f"{what} (learning rate {self._current_lr():.3g}): training stopped. Try a smaller --lr, a warm-up "
            f"(--schedule cosine), or check the data for NaNs{kept}")

    def evaluate(self, loader=None, features=False):
        """:func:`evaluate_model` on ``loader`` (default: the validation loader)."""
        loader = self.val_loader if loader is None else loader
        if loader is None:
            raise ValueError("no loader to evaluate: pass one, or give the Trainer a val_loader")
        return evaluate_model(self.model, loader, self.criterion, features=features)

    # -- the whole run -------------------------------------------------------------------------------
    def fit(self):
        """Train until ``self.epochs`` epochs are done; return the history (list of dicts).

        Raises :class:`TrainingInterrupted` after saving ``last.npz`` on Ctrl-C, and
        :class:`TrainingDiverged` on a NaN/inf training or validation loss. NumPy's overflow warnings
        are silenced meanwhile: a diverging run is reported once, by that exception.
        """
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        with _InterruptFlag() as stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            while self.epoch < self.epochs:
                result = self.train_epoch(stop)
                if not result["completed"]:
                    saved = self.save_checkpoint(self.path(LAST_CHECKPOINT)) if self.out_dir else None
                    where = f"; checkpoint saved to {saved}" if saved else ""
                    raise TrainingInterrupted(f"interrupted in epoch {self.epoch + 1}{where}", saved)
                self.train_seconds += result["seconds"]
                row = {"epoch": self.epoch + 1, "lr": result["lr"],
                       "train_loss": result["loss"], "train_accuracy": result["accuracy"],
                       "val_loss": None, "val_accuracy": None, "epoch_seconds": result["seconds"],
                       "images_per_second": result["images"] / max(result["seconds"], 1e-9),
                       "elapsed_seconds": None}
                evaluation = None
                if self.val_loader is not None:
                    evaluation = self.evaluate(features=True)
                    if not math.isfinite(evaluation.loss):     # e.g. batch-norm running statistics overflowed
                        self._diverged(f"the validation loss became {evaluation.loss} after epoch {self.epoch + 1} "
                                       f"(training loss {result['loss']:.4g}: weights or batch-norm statistics "
                                       f"overflowed)")
                    row["val_loss"], row["val_accuracy"] = evaluation.loss, evaluation.accuracy
                if self.scheduler is not None and self.scheduler_interval == "epoch":
                    self.scheduler.step()
                self.epoch += 1
                row["elapsed_seconds"] = self.train_seconds
                self.history.append(row)
                is_best = self._update_best(row)
                if is_best:
                    self.best_evaluation = evaluation
                self._say(f"epoch {self.epoch}/{self.epochs}  {_format_metrics(row)}{'  *best' if is_best else ''}")
                if self.out_dir is not None:
                    self.write_history()
                    self.save_checkpoint(self.path(LAST_CHECKPOINT))
                    if is_best:
                        self.save_checkpoint(self.path(BEST_CHECKPOINT))
                if stop.requested:
                    saved = self.path(LAST_CHECKPOINT)
                    where = f"; checkpoint saved to {saved}" if saved else ""
                    raise TrainingInterrupted(f"interrupted after epoch {self.epoch}{where}", saved)
        return self.history

    def _update_best(self, row):
        """Is this epoch the best so far? Highest validation accuracy (ties: lower validation loss);
        without validation, lowest training loss."""
        if row["val_accuracy"] is not None:
            key = (row["val_accuracy"], -row["val_loss"])
            best_key = None if self.best is None else (self.best["val_accuracy"], -self.best["val_loss"])
        else:
            key, best_key = (-row["train_loss"],), None if self.best is None else (-self.best["train_loss"],)
        if best_key is not None and key <= best_key:
            return False
        self.best = {"epoch": row["epoch"], "val_accuracy": row["val_accuracy"], "val_loss": row["val_loss"],
                     "train_loss": row["train_loss"]}
        return True

    # -- history files -------------------------------------------------------------------------------
    def write_history(self):
        """Write ``history.json`` and ``history.csv`` into ``out_dir``; returns their paths."""
        json_path, csv_path = self.path(HISTORY_JSON), self.path(HISTORY_CSV)
        io.write_text_atomic(json_path, json.dumps(self.history, indent=1) + "\n")
        lines = [",".join(HISTORY_COLUMNS)]
        for row in self.history:
            lines.append(",".join("" if row.get(c) is None else (str(row[c]) if c == "epoch" else f"{row[c]:.6g}")
                                  for c in HISTORY_COLUMNS))
        io.write_text_atomic(csv_path, "\n".join(lines) + "\n")
        return json_path, csv_path

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self):
        """Everything :meth:`load_state_dict` needs to continue exactly (a nested dict of arrays)."""
        return {
            "kind": CHECKPOINT_KIND,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "loader": self.train_loader.state_dict(),
            "rng": nn.init.default_generator().bit_generator.state,      # dropout masks
            "partial": self._partial,
            "history": copy.deepcopy(self.history),
            "best": self.best,
            "train_seconds": self.train_seconds,
            "extra": self.extra,
        }

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s output into this trainer (built the same way)."""
        if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
            raise ValueError("not a Trainer checkpoint (no kind='tinycnn-train'); weights files are loaded "
                             "with tinycnn.io.load_into or load_pretrained")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if (state["scheduler"] is None) != (self.scheduler is None):
            raise ValueError("the checkpoint and this trainer disagree on having a learning-rate scheduler")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.train_loader.load_state_dict(state["loader"])
        nn.init.default_generator().bit_generator.state = state["rng"]
        self.epoch = int(state["epoch"])
        self._partial = state["partial"]
        self.history = list(state["history"])
        self.best = state["best"]
        self.train_seconds = float(state["train_seconds"])
        self.best_evaluation = None

    def save_checkpoint(self, path):
        """Write :meth:`state_dict` to ``path`` atomically (:func:`tinycnn.io.save_checkpoint`)."""
        return io.save_checkpoint(path, self.state_dict())

    def resume(self, path):
        """Load a checkpoint written by :meth:`save_checkpoint`; :meth:`fit` then continues from it."""
        self.load_state_dict(io.load_checkpoint(path))
        return self


# ----------------------------------------------------------------------------------------------------
# A whole run from a configuration: what `tinycnn train` does
# ----------------------------------------------------------------------------------------------------
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
    val_fraction: float = 0.2           # the seed articles' 8:2 split
    val_source: str = "split"           # "test": validate on the official test files (MNIST, CIFAR-10)
    max_images: Optional[int] = None
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"             # the seed's MATLAB example uses Adam
    lr: float = 0.01
    weight_decay: Optional[float] = None
    schedule: str = "cosine"
    augment: str = "auto"
    label_smoothing: float = 0.0
    seed: int = 0
    zero_init_residual: bool = True     # start residual blocks as the identity (see zero_init_residual_)
    weights: Optional[str] = None
    freeze_backbone: bool = False

    def resolved(self):
        """A copy with the automatic choices made: ``width_mult`` and ``image_size`` (see the defaults)."""
        from .data.loader import _parse_spec

        kind, _ = _parse_spec(self.data)
        width = self.width_mult
        if width is None and _width_argument(self.model) is not None:
            width = DEFAULT_WIDTH_MULT
        size = DEFAULT_IMAGE_SIZE.get(kind, 32) if self.image_size is None else self.image_size
        return dataclasses.replace(self, width_mult=width, image_size=size)

    def check(self):
        """Raise ``ValueError`` naming the first bad field."""
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
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1); got {self.val_fraction!r}")
        if self.val_source not in VAL_SOURCES:
            raise ValueError(f"val_source must be one of {', '.join(VAL_SOURCES)}; got {self.val_source!r}")
        if _width_argument(self.model) is None and self.width_mult is not None:      # also: unknown model
            raise ValueError(f"{self.model} has no width multiplier; leave --width-mult out")
        if self.freeze_backbone and self.weights is None:
            raise ValueError("freeze_backbone needs pretrained weights (--weights PATH): a frozen random "
                             "backbone learns nothing")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def _width_argument(name):
    """The name of model ``name``'s width multiplier argument (``width_mult``, GhostNet's ``width``) or None."""
    import inspect

    from . import models

    if name not in models.list_models():
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(models.list_models())}")
    accepted = inspect.signature(getattr(models, name)).parameters
    return next((n for n in ("width_mult", "width") if n in accepted), None)


def build_model(name, num_classes, width_mult=None):
    """``get_model(name, num_classes=..., width_mult=...)``; GhostNet's multiplier is called ``width``."""
    from . import models

    width_name = _width_argument(name)
    kwargs = {"num_classes": int(num_classes)}
    if width_mult is not None:
        if width_name is None:
            raise ValueError(f"{name} has no width multiplier; leave --width-mult out")
        kwargs[width_name] = float(width_mult)
    return models.get_model(name, **kwargs)


def _augmentation(config, data_kind, image_size):
    """The training transforms (before normalisation) for ``config.augment``."""
    from .data import RandomCrop, RandomHorizontalFlip

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


def _prepare_data(config):
    """Load, split and normalise the data of ``config``: (train_loader, val_loader, LoadedData, info)."""
    from .data import Compose, DataLoader, Normalize, compute_mean_std, load_dataset

    data = load_dataset(config.data, image_size=config.image_size, val_fraction=config.val_fraction,
                        seed=config.seed, to_rgb=True, classes=config.classes, val_source=config.val_source,
                        max_images=config.max_images)
    if len(data.class_names) < 2:
        raise ValueError(f"dataset {config.data!r} has {len(data.class_names)} class ({', '.join(data.class_names)}): "
                         f"a classifier needs at least two (an image folder needs one sub-folder per class)")
    if len(data.train) == 0 or len(data.val) == 0:
        raise ValueError(f"dataset {config.data!r} is too small to split into training and validation parts")
    mean, std = compute_mean_std(data.train.images)
    std = np.maximum(std, 1e-3)                          # a constant channel would divide by zero
    normalize = Normalize(mean, std)
    augment, augment_name = _augmentation(config, config.data.split(":", 1)[0].lower(), config.image_size)
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
    config = config.check().resolved()
    nn.init.manual_seed(config.seed)
    train_loader, val_loader, data, info = _prepare_data(config)
    model = build_model(config.model, len(data.class_names), config.width_mult)
    if config.zero_init_residual:
        zero_init_residual_(model)
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
                             "image_size": config.image_size})
    return trainer, data, info, config


def run_training(config=None, out_dir="runs/train", resume=False, progress=True, log=print, plots=True,
                 tsne=True, feature_layer=None):
    """Train as ``tinycnn train`` does: data, model, optimizer, schedule, :class:`Trainer`, report.

    Parameters
    ----------
    config : TrainConfig (default: the defaults); ignored when resuming (the checkpoint's is used)
    out_dir : folder for checkpoints, history, plots and ``summary.json``
    resume : bool -- continue from ``out_dir/last.npz``
    progress, log : as :class:`Trainer`
    plots : bool -- write the PNG report (:func:`tinycnn.plots.write_report`) of the best epoch's model;
        ``trainer.model`` then holds the best weights (``best.npz``)
    tsne, feature_layer : passed to the report

    Returns
    -------
    RunResult(trainer, data, info, files). ``info["summary"]`` is what ``summary.json`` holds.
    """
    out_dir = pathlib.Path(out_dir).expanduser()
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
    config = TrainConfig() if config is None else config
    trainer, data, info, config = _make_trainer(config, out_dir, progress, log)
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
        if log is not None:
            log(f"resuming {out_dir} at epoch {trainer.epoch + 1}"
                + (f", batch {trainer.train_loader.state_dict()['batch'] + 1}" if trainer._partial else ""))
    setup_seconds = time.perf_counter() - started
    trainer.fit()

    files = [out_dir / LAST_CHECKPOINT, out_dir / BEST_CHECKPOINT, out_dir / HISTORY_JSON, out_dir / HISTORY_CSV]
    best_evaluation = trainer.best_evaluation
    report_seconds = 0.0
    if plots:
        from .plots import write_report

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
        "parameters": int(sum(p.size for p in trainer.model.parameters())),
        "config": config.to_dict(), "augment": info["augment"], "pretrained": info.get("pretrained"),
        "files": [str(path) for path in files] + [str(out_dir / "summary.json")],
    }
    io.write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    files.append(out_dir / "summary.json")
    info["summary"] = summary
    return RunResult(trainer, data, info, files)


def load_run(checkpoint_path):
    """A trained model and what is needed to use it, from a :class:`Trainer` checkpoint.

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
    if checkpoint.get("kind") != CHECKPOINT_KIND or "config" not in checkpoint.get("extra", {}):
        raise ValueError(f"{path} is not a checkpoint written by 'tinycnn train'")
    extra = checkpoint["extra"]
    config = TrainConfig.from_dict(extra["config"])
    model = build_model(config.model, len(extra["class_names"]), config.width_mult)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config, extra


def find_latest_run(root="runs", name=BEST_CHECKPOINT):
    """The most recently written ``root/*/name`` (e.g. ``runs/train/best.npz``), or None."""
    root = pathlib.Path(root)
    candidates = [path for path in root.glob(f"*/{name}") if path.is_file()] if root.is_dir() else []
    return max(candidates, key=lambda path: path.stat().st_mtime) if candidates else None


def load_images(paths, image_size):
    """Image files -> (N, 3, S, S) uint8, decoded and resized as the image-folder loader does."""
    from .data.folder import _load_image

    images = []
    for path in paths:
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
    from .data import Normalize, to_float32

    normalize = Normalize(extra["mean"], extra["std"])
    names = extra["class_names"]
    results = []
    model.eval()
    for start in range(0, len(images), batch_size):
        x = normalize(to_float32(images[start:start + batch_size])).astype(np.float32)   # (B, 3, S, S)
        probabilities = losses.softmax(model(x).astype(np.float64), axis=1)              # (B, K)
        for row in probabilities:
            order = np.argsort(-row)[:top]
            results.append([(names[k], float(row[k])) for k in order])
    return results


def evaluate_run(checkpoint_path, data=None, split="val", batch_size=128):
    """Evaluate a trained run on its validation split (or ``split="train"``/``"all"``, or other ``data``).

    The split is rebuilt from the run's configuration (same spec, image size, classes and seed), so
    ``split="val"`` is exactly the data the run validated on. Returns ``(Evaluation, class_names, config)``.
    """
    from .data import DataLoader, Normalize, load_dataset

    if split not in ("val", "train", "all"):
        raise ValueError(f"split must be 'val', 'train' or 'all'; got {split!r}")
    model, config, extra = load_run(checkpoint_path)
    spec = config.data if data is None else data
    loaded = load_dataset(spec, image_size=config.image_size, val_fraction=config.val_fraction, seed=config.seed,
                          to_rgb=True, classes=config.classes,
                          val_source=config.val_source if data is None else "split",
                          max_images=config.max_images if data is None else None)
    if tuple(loaded.class_names) != tuple(extra["class_names"]):
        raise ValueError(f"the data's classes {list(loaded.class_names)} differ from the model's "
                         f"{list(extra['class_names'])}")
    parts = {"val": [loaded.val], "train": [loaded.train], "all": [loaded.train, loaded.val]}[split]
    images = np.concatenate([part.images for part in parts])
    labels = np.concatenate([part.labels for part in parts])
    loader = DataLoader(images, labels, batch_size, transform=Normalize(extra["mean"], extra["std"]))
    return evaluate_model(model, loader, features=False), tuple(extra["class_names"]), config
