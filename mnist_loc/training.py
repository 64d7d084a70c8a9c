"""Training: one ``train()`` for any Keras model of either kind of answer, on in-memory digits.

It ties data and model together and gives every model the same backup and bit-identical
resume (weights, optimizer state *and* history: Keras' BackupAndRestore keeps no history),
NaN guard (Keras' TerminateOnNaN) and reproducibility (seeds, op determinism while it trains).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # op determinism's switch back off and query

from .config import TrainConfig
from .data import Digits, make_dataset, num_canvases
from .evaluation import kind_of
from .inference import canvases_per_batch
from .safe_writes import atomic_path, write_json


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped and wrote no final files."""


class BackupError(ValueError):
    """A backup cannot be resumed: unreadable, incomplete, or made with another config."""


@dataclass
class TrainResult:
    model: keras.Model
    history: dict = field(default_factory=dict)  # metric name -> list, one value per epoch
    train_seconds: float = 0.0  # fit time up to the end of the last epoch, validation included, summed over resumes
    train_cpu_seconds: float = 0.0  # this process's CPU time (all threads) over the same span, summed over resumes
    resumed_from_epoch: int = 0


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """A float for ``"constant"``; else linear warmup to the peak, then cosine to zero."""
    if config.schedule == "constant":
        return config.learning_rate
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 100 if warmup else config.learning_rate,
        decay_steps=total - warmup, alpha=0.0,
        warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup,
    )


def steps_per_call(config: TrainConfig, steps_per_epoch: int) -> int:
    """The largest divisor of ``steps_per_epoch`` not above ``config.steps_per_execution``.

    A divisor, because Keras runs whole calls: with 10 steps per call, a 429-step
    epoch would train 430 steps and the data stream would drift off the epochs.
    """
    return max(d for d in range(1, min(config.steps_per_execution, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def model_to_train(model, config: TrainConfig, num_classes: int) -> keras.Model:
    """The model a run trains, uncompiled and unchecked: ``model`` None is the task's kind's
    default model (:func:`mnist_loc.localization.default_model`, :func:`mnist_loc.detection.default_model`),
    a ``keras.Model`` is itself, a callable ``f(canvas_size=S, num_classes=C)`` is what it builds."""
    if model is None:
        return kind_of(config.task).default_model(config, num_classes)
    if isinstance(model, keras.Model):
        return model
    if not callable(model):
        raise TypeError(f"model must be a keras.Model or a callable that builds one, got {type(model).__name__}")
    built = model(canvas_size=config.task.canvas_size, num_classes=num_classes)
    if not isinstance(built, keras.Model):
        raise TypeError(f"the model builder must return a keras.Model, got {type(built).__name__}")
    return built


def prepare(model: keras.Model, config: TrainConfig, num_classes: int, steps_per_epoch: int):
    """Check ``model``'s outputs against ``config.task`` (:class:`~mnist_loc.inference.ModelOutputError` before any
    step) and compile it with the recipe, both by the kind that answers for it; returns the kind."""
    kind = kind_of(config.task, model)
    shapes = kind.check_outputs(model, config.task, num_classes)
    steps = 1 if tf.distribute.has_strategy() else steps_per_call(config, steps_per_epoch)
    kind.compile(model, config, learning_rate_schedule(config, steps_per_epoch), steps, shapes)
    return kind, shapes


class _Recorder(keras.callbacks.Callback):
    """Collect each finite epoch's logs into ``history`` and the fit time; with ``backup_dir``,
    back the epoch up. A non-finite epoch (TerminateOnNaN stopped it) marks ``diverged_in``."""

    def __init__(self, history, seconds_before, backup_dir, config):
        super().__init__()
        self.history, self.seconds_before, self.backup_dir, self.config = history, seconds_before, backup_dir, config
        self.seconds, self.cpu_seconds = seconds_before
        self.diverged_in = None

    def on_train_begin(self, logs=None):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(math.isfinite(float(v)) for v in logs.values()):  # a diverged epoch is not history
            if not math.isfinite(float(logs.get("loss", 0.0))):
                self.diverged_in = epoch + 1
            return
        for name, value in logs.items():
            self.history.setdefault(name, []).append(float(value))
        self.seconds = self.seconds_before[0] + time.perf_counter() - self.start
        self.cpu_seconds = self.seconds_before[1] + time.process_time() - self.cpu_start
        if self.backup_dir:
            _save_backup(self.backup_dir, self.model, self.config, epoch + 1, self.history, (self.seconds, self.cpu_seconds))


@contextlib.contextmanager
def _op_determinism(on: bool):
    """TensorFlow op determinism inside the block only (it is process-wide)."""
    switch = on and not tf_config.is_op_determinism_enabled()
    if switch:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if switch:
            tf_config.disable_op_determinism()


def train(config: TrainConfig, digits: Digits, model=None, *, backup_dir=None, strategy: tf.distribute.Strategy | None = None,
          verbose=1, callbacks=()) -> TrainResult:
    """Train a model on ``digits``' ``"train"`` canvases of ``config.task`` with the config's recipe.

    ``model``: None for the task's kind's default (:func:`model_to_train`), a ``keras.Model`` of
    your own, or a callable ``f(canvas_size=S, num_classes=C)`` that builds one (needed under a
    ``strategy``, whose scope must hold the variables). Its outputs must be the two-headed
    ``{"classification": [B, C] probabilities, "bounding_box": [B, 4]}`` (boxes ``[xmin, ymin,
    xmax, ymax]`` normalized to the canvas) or the detector's ``{"detections": [B, H, W, C + 4]}``
    (:mod:`mnist_loc.detector`; the only form for several digits), checked before any step
    (:class:`~mnist_loc.inference.ModelOutputError`). Seeds are set before the model is built and
    op determinism is on while it trains. Validates on the fixed ``"validation"`` canvases after
    every epoch. With ``backup_dir`` each finished epoch is checkpointed (weights, optimizer
    state, history) and a rerun with the same config resumes to the same weights. Under a
    ``tf.distribute`` ``strategy``, one step per call (keras-team/keras#19246).

    Returns a :class:`TrainResult`. Raises :class:`TrainingDiverged` on a NaN/inf loss (the
    backup keeps the last good epoch) and :class:`BackupError` for a backup it cannot resume.
    """
    digits.check(config.task)
    num_train = num_canvases(config.task, digits, "train")
    steps = config.steps_per_epoch or num_train // config.batch_size
    if steps == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {num_train} training canvases of a pass")
    keras.utils.set_random_seed(config.seed)
    strategy = strategy or tf.distribute.get_strategy()
    with _op_determinism(config.deterministic), tempfile.TemporaryDirectory(prefix="mnist_loc-") as scratch:
        with strategy.scope():
            model = model_to_train(model, config, digits.num_classes)
            kind, shapes = prepare(model, config, digits.num_classes, steps)
        start_epoch, history, seconds_before = _load_backup(backup_dir, model, config) if backup_dir else (0, {}, (0.0, 0.0))
        train_ds = make_dataset("train", digits, task=config.task, batch_size=config.batch_size, seed=config.seed, first_step=start_epoch * steps)
        val_batch = canvases_per_batch(config.task.canvas_size, config.validation_batch_size)
        val_ds = make_dataset("validation", digits, task=config.task, batch_size=val_batch, seed=config.seed)
        if config.validation_canvases:
            # The first N canvases, rebatched; the known length keeps Keras from warning that validation "ran out of data".
            count = min(config.validation_canvases, num_canvases(config.task, digits, "validation"))
            val_ds = val_ds.unbatch().take(count).batch(val_batch)
            val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(math.ceil(count / val_batch)))
        to_targets = kind.training_targets(shapes)
        if to_targets is not None:
            train_ds, val_ds = train_ds.map(to_targets), val_ds.map(to_targets)
        # The fixed validation canvases, drawn in the first epoch and read back from disk in the others
        # (in memory they would hold 360 MB of a dense task's 1,000 canvases for the whole run).
        val_ds = val_ds.cache(os.path.join(scratch, "validation"))
        recorder = _Recorder(history, seconds_before, backup_dir, config)
        # SwapEMAWeights: validation scores the averaged weights, the ones train() returns; swapped
        # back before the backup is written, so a resumed run continues from the raw weights.
        ema = [keras.callbacks.SwapEMAWeights()] if config.ema_momentum else []
        if start_epoch < config.epochs:
            model.fit(
                train_ds, epochs=config.epochs, initial_epoch=start_epoch, steps_per_epoch=steps, validation_data=val_ds,
                shuffle=False,  # the stream is already shuffled, reproducibly, per pass
                callbacks=[*ema, keras.callbacks.TerminateOnNaN(), *callbacks, recorder], verbose=verbose,
            )
        elif config.ema_momentum:  # fit() copies the average into the model when it ends; a finished backup skipped fit
            model.optimizer.finalize_variable_values(model.trainable_variables)
    if recorder.diverged_in is not None:
        raise TrainingDiverged(
            f"the loss became NaN or infinite in epoch {recorder.diverged_in}; training stopped and no final "
            "files were written (try a lower learning_rate)"
        )
    return TrainResult(model, history, recorder.seconds, recorder.cpu_seconds, start_epoch)


def remove_backup(backup_dir) -> None:
    """Delete a run's backup folder (finished, or to start over)."""
    if backup_dir and os.path.isdir(backup_dir):
        shutil.rmtree(backup_dir)


_STATE = "state.json"


def _save_backup(backup_dir, model, config, epochs_done, history, seconds):
    # Each epoch's weights get their own file and state.json, renamed in last, names the one
    # to resume from: a crash between the two writes leaves the previous epoch's pair intact.
    # Built by numpy in memory, then written by Python's own file: not by Keras' h5py writer (on
    # a full disk h5py leaves half-closed HDF5 objects that crash the interpreter at exit), and
    # not by np.savez on the file (numpy 2.1 leaves its ZipFile open on a write error, whose
    # __del__ then prints seven "Exception ignored" lines).
    weights = f"epoch-{epochs_done:04d}.npz"
    archive = io.BytesIO()
    np.savez(archive, **{name: v.numpy() for name, v in _named_variables(model).items()})
    with atomic_path(os.path.join(backup_dir, weights)) as tmp:
        with open(tmp, "wb") as f:
            f.write(archive.getbuffer())
            f.flush()
            os.fsync(f.fileno())
    state = {
        "epochs_done": epochs_done, "weights": weights, "config": config.to_dict(),
        "history": history, "train_seconds": seconds[0], "train_cpu_seconds": seconds[1],
    }
    write_json(os.path.join(backup_dir, _STATE), state)
    for name in os.listdir(backup_dir):
        if name.endswith(".npz") and name != weights:
            os.remove(os.path.join(backup_dir, name))


def _named_variables(model) -> dict:
    """Everything a resumed run needs, by a stable name: the model's weights and the
    optimizer's state (step count, Adam's moments, the weight average if kept)."""
    return {
        **{f"model.{i}": v for i, v in enumerate(model.weights)},
        **{f"optimizer.{i}": v for i, v in enumerate(model.optimizer.variables)},
    }


def _restore_variables(model, path) -> None:
    model.optimizer.build(model.trainable_variables)  # so the optimizer's state has a place to go
    targets = _named_variables(model)
    with np.load(path, allow_pickle=False) as saved:
        if sorted(saved.files) != sorted(targets):
            raise ValueError(f"holds {len(saved.files)} arrays, this model and optimizer have {len(targets)}")
        values = {name: saved[name] for name in targets}
    for name, variable in targets.items():
        if values[name].shape != tuple(variable.shape):
            raise ValueError(f"{name} has shape {values[name].shape}, expected {tuple(variable.shape)}")
        variable.assign(values[name])


def _load_backup(backup_dir, model, config):
    """Restore weights and optimizer state; return ``(epochs_done, history, (wall, CPU) seconds)``.

    Raises :class:`BackupError`, naming the folder and the way out, if the backup is
    unreadable (truncated JSON, missing or damaged weights) or from another config.
    """
    state_path = os.path.join(backup_dir, _STATE)
    if not os.path.exists(state_path):
        return 0, {}, (0.0, 0.0)
    way_out = "--restart (or deleting the folder) starts over"
    try:
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        epochs_done, history = int(state["epochs_done"]), dict(state["history"])
        seconds = (float(state["train_seconds"]), float(state["train_cpu_seconds"]))
        saved_config, weights = state["config"], os.path.join(backup_dir, state["weights"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BackupError(f"the backup in {backup_dir} is unreadable ({_reason(error)}); {way_out}") from None
    current = config.to_dict()
    if saved_config != current:
        differ = sorted(k for k in saved_config.keys() | current.keys() if saved_config.get(k) != current.get(k))
        raise BackupError(
            f"the backup in {backup_dir} was made with another config (differs in {', '.join(differ)}); "
            f"{way_out}, or rerun with the backup's settings"
        )
    try:
        _restore_variables(model, weights)
    except Exception as error:  # missing, truncated or foreign files: numpy and zipfile raise many types
        raise BackupError(f"the backup in {backup_dir} is unreadable ({os.path.basename(weights)}: {_reason(error)}); {way_out}") from None
    return epochs_done, history, seconds


def _reason(error) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__



class EpochProgress(keras.callbacks.Callback):
    """One line per epoch with a bar, elapsed time and the headline numbers the logs hold
    (:data:`SHOWN`: the loss, and the class accuracy and box IoU of a two-headed model).

    Made for logs and notebooks, where a per-step bar would fill the output.
    """

    SHOWN = (("loss", "loss"), ("acc", "classification_accuracy"), ("iou", "bounding_box_mean_iou"),
             ("val_loss", "val_loss"), ("val_acc", "val_classification_accuracy"), ("val_iou", "val_bounding_box_mean_iou"))

    def __init__(self, epochs: int, width: int = 20, print_fn=print):
        super().__init__()
        self.epochs = epochs
        self.width = width
        self.print_fn = print_fn
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        done = epoch + 1
        filled = round(self.width * done / max(self.epochs, 1))
        bar = "#" * filled + "." * (self.width - filled)
        numbers = "  ".join(f"{label} {logs[key]:.4f}" for label, key in self.SHOWN if key in logs)
        self.print_fn(f"epoch {done:>3}/{self.epochs} [{bar}] {time.perf_counter() - self.start:6.1f}s  {numbers}", flush=True)
