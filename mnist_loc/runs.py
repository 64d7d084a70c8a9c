"""One way to train and score: ``run()`` trains, scores on the task's fixed test canvases
and writes the run folder. The CLI's ``train``, the notebooks and the benchmarks call it.

A run folder holds ``model.keras``, ``task.json``, ``metrics.json`` (the test report,
``train_seconds`` and ``train_cpu_seconds``, the config, the recipe's name, the model's name, class and parameter
count, library versions), ``history.csv`` and ``predictions.png``. Folders are
self-contained: copy them from anywhere and compare with :func:`mnist_loc.table.runs_table`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field

import keras

from . import artifacts
from .boxes import iou
from .config import TrainConfig
from .data import Digits, canvases_at, make_dataset
from .evaluation import evaluate
from .model import build_model
from .training import EpochProgress, check_model_outputs, remove_backup, train

TEST_SEED = 0  # the task's fixed test canvases: one placement, the same for every training seed
PICTURED = 10  # test canvases drawn in predictions.png


@dataclass
class Run:
    """What :func:`run` returns.

    ``report``: the report on the scored split (:func:`mnist_loc.evaluation.evaluate`);
    ``predictions``: its predictions on the test canvases, in the split's order
    (:func:`mnist_loc.evaluation.predict_dataset`); ``metrics``: what ``metrics.json``
    holds (also without ``out_dir``).
    """

    model: keras.Model
    config: TrainConfig
    report: dict
    predictions: dict
    history: dict
    train_seconds: float
    train_cpu_seconds: float = 0.0
    metrics: dict = field(default_factory=dict)
    digits: Digits | None = None
    out_dir: str | None = None
    resumed_from_epoch: int = 0
    reused: bool = False


def run(
    config: TrainConfig = TrainConfig(),
    model=None,
    out_dir=None,
    *,
    data_dir=None,
    download: bool = True,
    digits: Digits | None = None,
    restart: bool = False,
    reuse: bool = False,
    split: str = "test",
    tta: bool = False,
    strategy=None,
    verbose=0,
    callbacks=None,
) -> Run:
    """Train ``model`` (see :func:`mnist_loc.training.train`: None for the course model,
    a ``keras.Model`` or a builder) with ``config``, score it on the 10,000 fixed test
    canvases of ``config.task`` (placement seed 0, whatever the training seed) and, with
    ``out_dir``, write the run folder there.

    With ``out_dir``, every finished epoch is backed up in ``out_dir/backup`` and the same
    call resumes an interrupted run (``restart=True`` discards the backup); the folder is
    locked while the run writes. ``reuse=True``: if ``out_dir`` already holds a finished run
    of this config (the same fields, split and test-time augmentation) and of a model with
    the same name and parameter count, it is read back instead of trained (its model,
    history and training seconds; the report re-scored here), so re-executing a notebook
    does not retrain what it already has. ``split="validation"`` scores the fixed validation
    canvases instead (for tuning a recipe; keep test for the final table). ``tta``: score
    with test-time augmentation.
    ``callbacks`` default to one progress line per epoch. Where the digits live is found
    once (``data_dir``, ``download``: :meth:`mnist_loc.data.Digits.find`), or given as
    ``digits``.
    """
    digits = digits or Digits.find(config.task, data_dir, download=download)
    if reuse and out_dir and (finished := _finished_run(out_dir, config, model, split, tta, len(digits.class_names))):
        return _read_back(out_dir, finished, config, digits, split, tta)
    backup_dir = os.path.join(out_dir, "backup") if out_dir else None
    with artifacts.output_lock(out_dir) if out_dir else contextlib.nullcontext():
        if restart:
            remove_backup(backup_dir)
        result = train(
            config, model, digits=digits, backup_dir=backup_dir, strategy=strategy, verbose=verbose,
            callbacks=[EpochProgress(config.epochs)] if callbacks is None else callbacks,
        )
        canvases = make_dataset(split, task=config.task, batch_size=500, seed=TEST_SEED, digits=digits, training=False)
        report, predictions = evaluate(result.model, canvases, tta=tta, return_predictions=True)
        report = {**report, "split": split, "placement_seed": TEST_SEED}
        extra = {"recipe": config.recipe_label(), "task_name": config.task.name}
        if out_dir:
            task = {**config.task.to_dict(), "class_names": list(digits.class_names)}
            figure = _picture(config, digits, predictions, split)
            metrics = artifacts.save_run(
                out_dir, result.model, report, result.history, config.to_dict(), result.train_seconds,
                figure=figure, task=task, extra=extra, train_cpu_seconds=result.train_cpu_seconds,
            )
            import matplotlib.pyplot as plt

            plt.close(figure)
            remove_backup(backup_dir)
        else:
            metrics = {**report, "train_seconds": result.train_seconds, "train_cpu_seconds": result.train_cpu_seconds, "config": config.to_dict(),
                       "model": artifacts.describe_model(result.model), **extra}
    return Run(
        model=result.model, config=config, report=report, predictions=predictions, history=result.history,
        train_seconds=result.train_seconds, train_cpu_seconds=result.train_cpu_seconds, metrics=metrics, digits=digits,
        out_dir=os.fspath(out_dir) if out_dir else None, resumed_from_epoch=result.resumed_from_epoch,
    )


def _finished_run(out_dir, config, model, split, tta, num_classes):
    """The ``metrics.json`` of the finished run in ``out_dir`` if it is this run, else None."""
    path = os.path.join(out_dir, "metrics.json")
    if not (os.path.exists(path) and os.path.exists(os.path.join(out_dir, "model.keras"))):
        return None
    with open(path, encoding="utf-8") as f:
        metrics = json.load(f)
    if metrics.get("config") != config.to_dict() or metrics.get("split", "test") != split or bool(metrics.get("tta")) != bool(tta):
        return None
    wanted = _model_to_train(model, config, num_classes)
    check_model_outputs(wanted, config.task.canvas_size, num_classes)  # also builds a subclassed model
    stored = metrics.get("model", {})
    if (stored.get("name"), stored.get("parameters")) != (wanted.name, wanted.count_params()):
        return None
    return metrics


def _model_to_train(model, config, num_classes):
    if model is None:
        return build_model(config.task.canvas_size, num_classes)
    if isinstance(model, keras.Model):
        return model
    return model(canvas_size=config.task.canvas_size, num_classes=num_classes)


def _read_back(out_dir, metrics, config, digits, split, tta):
    model = artifacts.load_model(os.path.join(out_dir, "model.keras"))
    canvases = make_dataset(split, task=config.task, batch_size=500, seed=TEST_SEED, digits=digits, training=False)
    report, predictions = evaluate(model, canvases, tta=tta, return_predictions=True)
    report = {**report, "split": split, "placement_seed": TEST_SEED}
    for key in ("accuracy", "mean_iou"):
        if abs(report[key] - metrics[key]) > 1e-4:
            print(f"note: {out_dir} re-scored {key} {report[key]:.4f} here, {metrics[key]:.4f} when it was trained "
                  "(another machine's rounding)")
    return Run(
        model=model, config=config, report=report, predictions=predictions, history=artifacts.read_history_csv(os.path.join(out_dir, "history.csv")),
        train_seconds=metrics["train_seconds"], train_cpu_seconds=metrics.get("train_cpu_seconds", float("nan")), metrics=metrics,
        digits=digits, out_dir=os.fspath(out_dir), reused=True,
    )


def _picture(config, digits, predictions, split):
    from .plots import plot_canvases

    first = slice(0, PICTURED)
    images, labels, boxes = canvases_at(split, range(PICTURED), task=config.task, seed=TEST_SEED, digits=digits)
    return plot_canvases(
        images, boxes, predictions["boxes"][first], true_labels=labels, pred_labels=predictions["labels"][first],
        ious=iou(predictions["boxes"][first], boxes),
    )
