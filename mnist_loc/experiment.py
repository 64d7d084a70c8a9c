"""One way to train and score: :func:`run` trains, scores on the task's fixed test canvases and
writes the run folder (:mod:`mnist_loc.artifacts`). The CLI's ``train``, the notebooks and the
benchmarks call it; folders made anywhere compare with :func:`mnist_loc.table.runs_table`.
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass

import keras

from . import __version__, artifacts
from .config import TrainConfig
from .data import Digits
from .evaluation import TEST_SEED, kind_of
from .inference import output_shapes
from .safe_writes import output_lock
from .training import EpochProgress, model_to_train, remove_backup, train

PICTURED = 10  # test canvases drawn in predictions.png


@dataclass
class RunResult:
    """What :func:`run` returns. ``report``: :func:`mnist_loc.evaluation.evaluate` on the
    scored split; ``predictions``: its per-canvas predictions in the split's order;
    ``metrics``: what ``metrics.json`` holds (also without ``out_dir``)."""

    model: keras.Model
    config: TrainConfig
    report: dict
    predictions: dict
    history: dict
    train_seconds: float
    train_cpu_seconds: float
    metrics: dict
    digits: Digits
    out_dir: str | None = None
    resumed_from_epoch: int = 0
    reused: bool = False


def run(config: TrainConfig = TrainConfig(), model=None, out_dir=None, *, digits: Digits | None = None, data_dir=None,
        download: bool = True, restart: bool = False, reuse: bool = False, split: str = "test", tta: bool = False,
        strategy=None, verbose=0, callbacks=None) -> RunResult:
    """Train ``model`` (see :func:`mnist_loc.training.train`: None for the course model, a
    ``keras.Model`` or a builder) with ``config``, score it on the fixed test canvases of
    ``config.task`` (placement seed 0, whatever the training seed) and, with ``out_dir``, write
    the run folder there, holding its lock meanwhile.

    ``digits``: a :class:`~mnist_loc.data.Digits`; without it they are read once with
    :meth:`Digits.find` (``data_dir``, ``download``). With ``out_dir``, every finished epoch is
    backed up in ``out_dir/backup`` and the same call resumes an interrupted run
    (``restart=True`` discards the backup). ``reuse=True``: a finished run of this config,
    split, test-time augmentation and model (name and parameter count) in ``out_dir`` is read
    back instead of trained (re-scored here), so re-executing a notebook does not retrain.
    ``split="validation"`` scores the validation canvases (to tune; keep test for the final
    table). ``callbacks`` default to one progress line per epoch.
    """
    digits = digits or Digits.find(config.task, data_dir, download=download)
    task = config.task
    with output_lock(out_dir) if out_dir else contextlib.nullcontext():
        finished = reuse and out_dir and artifacts.finished_run(out_dir, config.to_dict(), _wanted(model, config, digits), split, tta)
        if finished:
            trained = artifacts.load_model(os.path.join(out_dir, "model.keras"))
            history = artifacts.read_history_csv(os.path.join(out_dir, "history.csv"))
            seconds, resumed_from = (finished["train_seconds"], finished["train_cpu_seconds"]), 0
        else:
            backup_dir = os.path.join(out_dir, "backup") if out_dir else None
            if restart:
                remove_backup(backup_dir)
            result = train(config, digits, model, backup_dir=backup_dir, strategy=strategy, verbose=verbose,
                           callbacks=[EpochProgress(config.epochs)] if callbacks is None else callbacks)
            trained, history, resumed_from = result.model, result.history, result.resumed_from_epoch
            seconds = (result.train_seconds, result.train_cpu_seconds)
        kind, answers = kind_of(task, trained), kind_of(task)  # the model's kind scores; the task's shapes the answers
        options = kind.calibrate(trained, digits, task, finished or None)
        report, predictions = kind.evaluate(trained, digits, task=task, split=split, seed=TEST_SEED, tta=tta, return_predictions=True,
                                            keep_images=False, **options)
        report = {**report, "split": split, "placement_seed": TEST_SEED}
        metrics = finished or {
            **report, "train_seconds": float(seconds[0]), "train_cpu_seconds": float(seconds[1]), "config": config.to_dict(),
            "task": {**task.to_dict(), "class_names": list(digits.class_names)}, "model": artifacts.describe_model(trained),
            "recipe": config.recipe_label(), "task_name": task.name, "versions": _versions(),
        }
        if finished:
            for key in answers.HEADLINE:
                if abs(report[key] - finished[key]) > 1e-4:
                    print(f"note: {out_dir} re-scored {key} {report[key]:.4f} here, {finished[key]:.4f} when it was "
                          "trained (another machine's rounding)")
        elif out_dir:
            figure = answers.picture(task, digits, predictions, split, TEST_SEED, PICTURED)
            artifacts.save_run(out_dir, trained, metrics, history, metrics["task"], figure)
            remove_backup(backup_dir)
    return RunResult(trained, config, report, predictions, history, seconds[0], seconds[1], metrics, digits,
                     os.fspath(out_dir) if out_dir else None, resumed_from, bool(finished))


def _wanted(model, config, digits) -> dict:
    """The model a finished run must hold to be reused, as :func:`mnist_loc.artifacts.describe_model`
    names it: the default model's name (its shape is in the config), a model's own description,
    or that of what a builder builds."""
    if model is None:
        return {"name": kind_of(config.task).MODEL_NAME, "parameters": None}
    built = model_to_train(model, config, digits.num_classes)
    output_shapes(built, config.task.canvas_size)  # builds a subclassed model's weights symbolically: no canvas goes through it
    return artifacts.describe_model(built)


def _versions() -> dict:
    import tensorflow as tf

    return {"mnist_loc": __version__, "tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()}
