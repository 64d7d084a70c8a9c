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
from .boxes import iou
from .config import TrainConfig
from .data import Digits, canvases_at
from .detection_eval import choose_count_threshold, evaluate_detections
from .detector import set_count_threshold
from .evaluation import TEST_SEED, evaluate
from .safe_writes import output_lock
from .training import EpochProgress, check_model_outputs, model_to_train, remove_backup, train

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


def run(
    config: TrainConfig = TrainConfig(),
    model=None,
    out_dir=None,
    *,
    digits: Digits | None = None,
    data_dir=None,
    download: bool = True,
    restart: bool = False,
    reuse: bool = False,
    split: str = "test",
    tta: bool = False,
    strategy=None,
    verbose=0,
    callbacks=None,
) -> RunResult:
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
    task, num_classes = config.task, digits.num_classes
    with output_lock(out_dir) if out_dir else contextlib.nullcontext():
        finished = None
        if reuse and out_dir:
            wanted = model_to_train(model, task.canvas_size, num_classes, config.mixed_precision, task.detection, task.max_count,
                                    config.detector)
            check_model_outputs(wanted, task.canvas_size, num_classes, task.detection)  # also builds a subclassed model
            finished = artifacts.finished_run(out_dir, config.to_dict(), artifacts.describe_model(wanted), split, tta)
        if finished:
            trained = artifacts.load_model(os.path.join(out_dir, "model.keras"))
            history = artifacts.read_history_csv(os.path.join(out_dir, "history.csv"))
            seconds, resumed_from = (finished["train_seconds"], finished["train_cpu_seconds"]), 0
        else:
            backup_dir = os.path.join(out_dir, "backup") if out_dir else None
            if restart:
                remove_backup(backup_dir)
            result = train(
                config, digits, model, backup_dir=backup_dir, strategy=strategy, verbose=verbose,
                callbacks=[EpochProgress(config.epochs)] if callbacks is None else callbacks,
            )
            trained, history, resumed_from = result.model, result.history, result.resumed_from_epoch
            seconds = (result.train_seconds, result.train_cpu_seconds)
        if task.detection:
            threshold = finished["count_threshold"] if finished else _count_threshold(trained, digits, task)
            report, predictions = evaluate_detections(trained, digits, task=task, split=split, threshold=threshold, return_predictions=True)
        else:
            report, predictions = evaluate(trained, digits, task=task, split=split, tta=tta, return_predictions=True)
        report = {**report, "split": split, "placement_seed": TEST_SEED}
        metrics = finished or {
            **report, "train_seconds": float(seconds[0]), "train_cpu_seconds": float(seconds[1]), "config": config.to_dict(),
            "task": {**task.to_dict(), "class_names": list(digits.class_names)}, "model": artifacts.describe_model(trained),
            "recipe": config.recipe_label(), "task_name": task.name, "versions": _versions(),
        }
        if finished:
            for key in ("ap", "count_accuracy") if task.detection else ("accuracy", "mean_iou"):
                if abs(report[key] - finished[key]) > 1e-4:
                    print(f"note: {out_dir} re-scored {key} {report[key]:.4f} here, {finished[key]:.4f} when it was "
                          "trained (another machine's rounding)")
        elif out_dir:
            figure = _picture(task, digits, predictions, split)
            artifacts.save_run(out_dir, trained, metrics, history, metrics["task"], figure)
            remove_backup(backup_dir)
    return RunResult(trained, config, report, predictions, history, seconds[0], seconds[1], metrics, digits,
                     os.fspath(out_dir) if out_dir else None, resumed_from, bool(finished))


def _count_threshold(model, digits, task) -> float:
    """The count threshold chosen on the validation canvases, saved in the model when it can hold it."""
    _, validation = evaluate_detections(model, digits, task=task, split="validation", threshold=0.5, return_predictions=True,
                                        keep_images=False)
    threshold = choose_count_threshold(validation["scores"], validation["true_labels"])
    set_count_threshold(model, threshold)
    return threshold


def _versions() -> dict:
    import tensorflow as tf

    return {"mnist_loc": __version__, "tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()}


def _picture(task, digits, predictions, split):
    """predictions.png: the first test canvases with true (green) and predicted (red) boxes."""
    from .plots import plot_canvases

    first = slice(0, PICTURED)
    if task.detection:
        from .plots import plot_detections

        return plot_detections(predictions["images"][first], predictions["true_labels"][first], predictions["true_boxes"][first],
                               {k: predictions[k][first] for k in ("boxes", "labels", "scores")}, predictions["threshold"])
    images, labels, boxes = canvases_at(split, range(PICTURED), task=task, seed=TEST_SEED, digits=digits)
    return plot_canvases(
        images, boxes, predictions["boxes"][first], true_labels=labels, pred_labels=predictions["labels"][first],
        ious=iou(predictions["boxes"][first], boxes),
    )
