"""Training: the :class:`Trainer` for any tinycnn model, and optimizers and schedules by name.

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

Its neighbours: :mod:`tinycnn.evaluate` (evaluation and the confusion matrix, used for validation),
:mod:`tinycnn.transfer` (pretrained weights, a frozen backbone, zero-initialised residual branches) and
:mod:`tinycnn.run` (a whole run from a :class:`~tinycnn.run.TrainConfig`: what ``tinycnn train`` does).
The names that moved there from this module are still importable from it (``train.run_training``,
``train.TrainConfig``, ``train.load_pretrained``, ...).
"""
import copy
import dataclasses
import json
import math
import numbers
import pathlib
import signal
import sys
import threading
import time

import numpy as np

from kernels._jit import one_blas_thread

from . import io, losses, nn, optim
from .evaluate import Evaluation, confusion_matrix, evaluate_model, find_classifier
from .transfer import freeze_backbone, load_pretrained, zero_init_residual_

__all__ = ["Trainer", "EpochProgress", "TrainingDiverged", "TrainingInterrupted", "make_optimizer", "make_scheduler",
           "CHECKPOINT_KIND", "LAST_CHECKPOINT", "BEST_CHECKPOINT",
           # moved to tinycnn.evaluate and tinycnn.transfer, re-exported here
           "Evaluation", "evaluate_model", "confusion_matrix", "find_classifier", "load_pretrained",
           "freeze_backbone", "zero_init_residual_"]

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


@dataclasses.dataclass
class EpochProgress:
    """The running totals of one training epoch (kept in a checkpoint when Ctrl-C stops it mid-way).

    Attributes
    ----------
    lr : float -- learning rate of the epoch's first step
    loss_sum : float -- sum over the images seen of their loss (batch mean x batch size)
    correct : int -- images whose arg-max logit was the label
    seen : int -- images trained on so far
    seconds : float -- time spent in training steps, over every session of this epoch
    """
    lr: float
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0

    def add_batch(self, loss, logits, labels):
        """Count one batch: ``loss`` its mean loss, ``logits`` (B, K), ``labels`` (B,)."""
        self.loss_sum += loss * len(labels)
        self.correct += int(np.sum(logits.argmax(axis=1) == labels))
        self.seen += len(labels)

    @property
    def mean_loss(self):
        """Mean loss per image so far (0 before the first batch)."""
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self):
        """Share of the images so far classified correctly."""
        return self.correct / max(self.seen, 1)

    def to_dict(self):
        """A plain dict for the checkpoint (its ``"partial"`` entry)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """The inverse of :meth:`to_dict` (values read back from a checkpoint)."""
        return cls(lr=float(values["lr"]), loss_sum=float(values["loss_sum"]), correct=int(values["correct"]),
                   seen=int(values["seen"]), seconds=float(values["seconds"]))


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
    frozen_backbone : bool -- keep every layer but the classifier in evaluation mode
        (:func:`tinycnn.transfer.freeze_backbone`); when the classifier's output is the model's output,
        the backward pass stops at the classifier
    progress : bool -- tqdm progress bars (on stderr)
    log : callable(str) or None -- receives one line per epoch (default ``print``; None: silent)
    extra : dict, optional -- stored in every checkpoint under ``"extra"`` (e.g. the run's configuration,
        class names and normalisation, so a checkpoint can be used on its own)

    Attributes
    ----------
    epoch : epochs completed
    history : list of dicts, one per epoch, keys :data:`HISTORY_COLUMNS`
    best : {"epoch", "val_accuracy", "val_loss"} of the best epoch so far (or None)
    best_evaluation : :class:`tinycnn.evaluate.Evaluation` (with features) of the best epoch, when it ran in
        this process
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
        self._partial = None                # EpochProgress of an epoch interrupted mid-way

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
            partial = EpochProgress(lr=self._current_lr())
        else:
            partial, self._partial = self._partial, None
        first_batch = loader.state_dict()["batch"]
        self._set_train_mode()
        redraw_seconds = 0.1 if sys.stderr.isatty() else 10.0     # a log file (CI) gets a line every 10 s
        bar = tqdm(total=len(loader), initial=first_batch, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                   unit="batch", disable=not self.progress, leave=False, dynamic_ncols=True,
                   mininterval=redraw_seconds)
        started = time.perf_counter() - partial.seconds     # the clock includes earlier sessions
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
                partial.add_batch(loss, logits, y)
                elapsed = time.perf_counter() - started
                bar.set_postfix(loss=f"{partial.mean_loss:.3f}", acc=f"{100 * partial.accuracy:.1f}%",
                                img_s=f"{partial.seen / max(elapsed, 1e-9):.0f}", refresh=False)
                bar.update(1)                                           # redraws at most every redraw_seconds
                if stop_flag is not None and stop_flag.requested and batch + 1 < len(loader):
                    completed = False
                    break
        finally:
            bar.close()
        partial.seconds = time.perf_counter() - started
        if not completed:
            self._partial = partial
        return {"loss": partial.mean_loss, "accuracy": partial.accuracy, "images": partial.seen,
                "seconds": partial.seconds, "lr": partial.lr, "completed": completed}

    def _diverged(self, what):
        """Raise :class:`TrainingDiverged`: ``what`` says which loss became what, and where."""
        last = self.path(LAST_CHECKPOINT)
        kept = f"; the last good checkpoint is {last}" if last is not None and last.exists() else ""
        raise TrainingDiverged(
            f"{what} (learning rate {self._current_lr():.3g}): training stopped. Try a smaller --lr, a warm-up "
            f"(--schedule cosine), or check the data for NaNs{kept}")

    def evaluate(self, loader=None, features=False):
        """:func:`tinycnn.evaluate.evaluate_model` on ``loader`` (default: the validation loader)."""
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
        # one BLAS thread for the whole run (parallelism comes from the numba kernels; kernels/_jit.py)
        with _InterruptFlag() as stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                one_blas_thread():
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
                    # checkpoints first, then the history: if a write fails (disk full) the history never
                    # describes an epoch the checkpoint does not hold
                    self.save_checkpoint(self.path(LAST_CHECKPOINT))
                    if is_best:
                        self.save_checkpoint(self.path(BEST_CHECKPOINT))
                    self.write_history()
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
            "partial": None if self._partial is None else self._partial.to_dict(),
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
        self._partial = None if state["partial"] is None else EpochProgress.from_dict(state["partial"])
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
# Names that moved to tinycnn.run, still reachable as train.<name>
# ----------------------------------------------------------------------------------------------------
_MOVED_TO_RUN = ("TrainConfig", "RunResult", "build_model", "run_training", "load_run", "find_latest_run",
                 "load_images", "predict_images", "evaluate_run", "AUGMENTATIONS", "VAL_SOURCES",
                 "DEFAULT_WIDTH_MULT", "DEFAULT_IMAGE_SIZE")


def __getattr__(name):
    """``train.run_training``, ``train.TrainConfig``, ...: the names that moved to :mod:`tinycnn.run`.

    :mod:`tinycnn.run` imports this module, so they are looked up on first use (PEP 562) rather than
    imported at the top, which would make the two modules import each other.
    """
    if name in _MOVED_TO_RUN:
        from . import run
        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
