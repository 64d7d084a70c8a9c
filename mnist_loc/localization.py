"""One digit per canvas: the course model's kind of answer, a class and a box.

Everything a run asks of this kind, in one place: the default model for a task, the check of a
model's outputs, compile, the training targets, predict, the report and its formatting, the
table's columns and the picture. Any Keras model whose outputs are ``{"classification": [B, C]
probabilities, "bounding_box": [B, 4]}`` answers this way. Boxes are ``[xmin, ymin, xmax, ymax]``
normalized to the canvas. :mod:`mnist_loc.detection` is the other kind, with the same names.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from .boxes import SIZE_BUCKETS, iou
from .data import Digits, canvases_at, make_dataset, scene_batch_size
from .inference import TTA_DESCRIPTION, ModelOutputError, forward, model_canvas_size
from .model import build_model, compile_model, trunk_policy

MODEL_NAME = "mnist_loc"  # build_model's, the default model of this kind
HEADLINE = ("accuracy", "mean_iou")  # what a re-scored run is compared on
PROGRESS = (("acc", "classification_accuracy"), ("iou", "bounding_box_mean_iou"),
            ("val_acc", "val_classification_accuracy"), ("val_iou", "val_bounding_box_mean_iou"))
IOU_THRESHOLDS = (0.5, 0.6, 0.75)
EXPECTED = "{{'classification': [B, {C}] class probabilities, 'bounding_box': [B, 4]}}"


def default_model(config, num_classes: int) -> keras.Model:
    """The course model (:func:`mnist_loc.model.build_model`) for ``config.task``, its trunk's
    dtype from ``config.mixed_precision``; uncompiled."""
    return build_model(config.task.canvas_size, num_classes, dtype_policy=trunk_policy(config.mixed_precision))


def check_outputs(model: keras.Model, task, num_classes: int) -> dict:
    """Raise :class:`~mnist_loc.inference.ModelOutputError`, naming what is wrong, unless
    ``model`` maps float32 ``[B, S, S, 1]`` canvases to ``{"classification": [B, C]
    probabilities, "bounding_box": [B, 4]}``. Runs the model once on two black canvases
    (inference mode) to check that the class output is a softmax. Returns ``{name: shape}`` for B=2."""
    size = task.canvas_size
    expected = EXPECTED.format(C=num_classes)
    try:
        outputs = model(np.zeros((2, size, size, 1), np.float32), training=False)
    except Exception as error:
        reason = " ".join(str(error).split())[:300]
        raise ModelOutputError(f"the model fails on float32 [B, {size}, {size}, 1] canvases ({type(error).__name__}: {reason})") from None
    if not isinstance(outputs, dict):
        raise ModelOutputError(f"the model must return a dict {expected}, got {type(outputs).__name__}")
    if set(outputs) != {"classification", "bounding_box"}:
        raise ModelOutputError(f"the model's outputs must be exactly {expected}, got keys {sorted(outputs)}")
    shapes = {name: tuple(value.shape) for name, value in outputs.items()}
    if shapes["classification"] != (2, num_classes):
        raise ModelOutputError(f"the model's 'classification' output must be [B, {num_classes}] (the task has {num_classes} classes), "
                               f"got {list(shapes['classification'])} for B=2")
    if shapes["bounding_box"] != (2, 4):
        raise ModelOutputError(f"the model's 'bounding_box' output must be [B, 4] as [xmin, ymin, xmax, ymax], got {list(shapes['bounding_box'])} for B=2")
    probabilities = np.asarray(outputs["classification"], np.float64)
    if not (np.all(np.isfinite(probabilities)) and probabilities.min() >= 0 and np.allclose(probabilities.sum(-1), 1.0, atol=1e-3)):
        raise ModelOutputError("the model's 'classification' output must be probabilities (end it with a softmax): "
                               f"rows sum to {', '.join(f'{v:.3g}' for v in probabilities.sum(-1))}")
    return shapes


def compile(model: keras.Model, config, learning_rate, steps_per_execution: int, shapes: dict) -> keras.Model:
    """Compile ``model`` in place with ``config``'s recipe (:func:`mnist_loc.model.compile_model`);
    ``learning_rate`` a float or a schedule."""
    return compile_model(model, learning_rate=learning_rate, box_loss=config.box_loss, box_loss_weight=config.box_loss_weight,
                         label_smoothing=config.label_smoothing, ema_momentum=config.ema_momentum,
                         steps_per_execution=steps_per_execution)


def training_targets(shapes: dict):
    """None: the model trains on :func:`~mnist_loc.data.make_dataset`'s targets as they are."""
    return None


def calibrate(model, digits, task, metrics: dict | None = None) -> dict:
    """The evaluation options chosen on validation canvases: none for this kind, ``{}``."""
    return {}


def predict(model: keras.Model, canvases: np.ndarray, batch_size: int = 500, *, tta: bool = False, threshold=None,
            max_detections=None) -> dict:
    """The answer on checked float32 ``[N, S, S, 1]`` canvases: ``{"labels": int64 [N],
    "confidence": float32 [N], "probabilities": float32 [N, C], "boxes": float32 [N, 4]}``.
    ``tta``: average over shifted copies (:data:`~mnist_loc.inference.TTA_SHIFTS`)."""
    if threshold is not None or max_detections is not None:
        raise ValueError("threshold and max_detections are a detector's; this model answers one digit per canvas")
    run = forward(model, tta)
    parts = [run(canvases[i: i + batch_size]) for i in range(0, len(canvases), batch_size)]
    probabilities = np.concatenate([np.asarray(p["classification"], np.float32) for p in parts])
    return {
        "labels": probabilities.argmax(-1).astype(np.int64),
        "confidence": probabilities.max(-1),
        "probabilities": probabilities,
        "boxes": np.concatenate([np.asarray(p["bounding_box"], np.float32) for p in parts]),
    }


def check_dataset(dataset: tf.data.Dataset, canvas_size: int | None = None) -> int:
    """Raise naming the problem unless ``dataset`` yields ``(float32 [B, S, S, 1], targets)``
    with ``targets = {"classification": [B, C], "bounding_box": [B, 4]}``; return ``S``.

    ``canvas_size``: the side the model expects, if it declares one."""
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict)):
        raise ValueError("the dataset must yield (images, {'classification': ..., 'bounding_box': ...}) batches, as make_dataset does")
    images, targets = spec
    if "labels" in targets:
        raise ValueError("a task with several digits per canvas needs a model with the detector's outputs "
                         "({'detections': ...}, mnist_loc.detector); this model answers one digit per canvas")
    if {"classification", "bounding_box"} - set(targets):
        raise ValueError(f"the dataset's targets need 'classification' and 'bounding_box', got {sorted(targets)}")
    if images.dtype != tf.float32:
        raise TypeError(f"the dataset's images must be float32 in [0, 1], got {images.dtype.name}")
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(f"the dataset's images must be batches [B, S, S, 1] (rank 4), got shape {shape}")
    if shape[3] != 1:
        raise ValueError(f"the dataset's images must have 1 channel, got {shape[3]}")
    if canvas_size is not None and shape[1:3] != (canvas_size, canvas_size):
        raise ValueError(f"the dataset's images are {shape[1]}x{shape[2]}, the model expects {canvas_size}x{canvas_size} canvases")
    if shape[1] is None or shape[1] != shape[2]:
        raise ValueError(f"the dataset's images must be square canvases of a known size, got shape {shape}")
    return int(shape[1])


def predict_dataset(model: keras.Model, dataset: tf.data.Dataset, *, tta: bool = False) -> dict:
    """Predict a finite dataset of ``(images, targets)`` batches in one pass.

    Returns numpy arrays: ``true_labels`` int64 ``[N]``, ``true_boxes`` float32
    ``[N, 4]``, and ``labels``, ``confidence``, ``probabilities``, ``boxes`` as in
    :func:`predict` (``tta`` as there). Works for any model with the two outputs.
    """
    check_dataset(dataset, model_canvas_size(model))
    run = forward(model, tta)
    parts = {"true_labels": [], "true_boxes": [], "labels": [], "confidence": [], "probabilities": [], "boxes": []}
    for images, targets in dataset:
        if not np.all(np.isfinite(images.numpy())):
            raise ValueError("the dataset's images contain NaN or infinite pixels")
        outputs = run(images)
        probabilities = np.asarray(outputs["classification"])
        parts["true_labels"].append(targets["classification"].numpy().argmax(-1))
        parts["true_boxes"].append(targets["bounding_box"].numpy())
        parts["labels"].append(probabilities.argmax(-1))
        parts["confidence"].append(probabilities.max(-1))
        parts["probabilities"].append(probabilities.astype(np.float32))
        parts["boxes"].append(np.asarray(outputs["bounding_box"], np.float32))
    if not parts["labels"]:
        raise ValueError("the dataset is empty")
    return {name: np.concatenate(values) for name, values in parts.items()}


def _scores(correct, ious) -> dict:
    return {
        "count": int(len(ious)),
        "accuracy": float(correct.mean()) if len(ious) else None,
        "mean_iou": float(ious.mean()) if len(ious) else None,
        "iou_at_50": float((ious >= 0.5).mean()) if len(ious) else None,
        "iou_at_75": float((ious >= 0.75).mean()) if len(ious) else None,
    }


def report(true_labels, pred_labels, true_boxes, pred_boxes, *, num_classes: int = 10, canvas_size: int = 75) -> dict:
    """The evaluation report from arrays (labels int ``[N]``, boxes float ``[N, 4]``); see :func:`evaluate`."""
    true_labels = np.asarray(true_labels)
    pred_labels = np.asarray(pred_labels)
    ious = np.atleast_1d(iou(pred_boxes, true_boxes))
    correct = pred_labels == true_labels
    result = {
        "num_examples": int(len(ious)),
        "accuracy": float(correct.mean()),
        "mean_iou": float(ious.mean()),
        "median_iou": float(np.median(ious)),
        **{f"iou_at_{round(t * 100)}": float((ious >= t).mean()) for t in IOU_THRESHOLDS},
        "box_mse": float(np.mean((np.asarray(pred_boxes, np.float64) - np.asarray(true_boxes, np.float64)) ** 2)),
        "detection_accuracy": float((correct & (ious >= 0.5)).mean()),
        "per_class": {},
    }
    for label in range(num_classes):
        mask = true_labels == label
        count = int(mask.sum())
        result["per_class"][str(label)] = {
            "count": count,
            "accuracy": float(correct[mask].mean()) if count else None,
            "mean_iou": float(ious[mask].mean()) if count else None,
        }
    true_boxes = np.asarray(true_boxes, np.float64).reshape(-1, 4)
    areas = (true_boxes[:, 2] - true_boxes[:, 0]) * (true_boxes[:, 3] - true_boxes[:, 1]) * canvas_size**2
    if np.ptp(areas) > 0.5:  # sizes vary (more than float rounding of equal boxes): scores per size bucket
        result["by_size"] = {
            name: _scores(correct[(areas >= lo) & (areas < hi)], ious[(areas >= lo) & (areas < hi)])
            for name, lo, hi in SIZE_BUCKETS
        }
    return result


def evaluate(model: keras.Model, data, *, task, split: str = "test", seed: int = 0, tta: bool = False, threshold=None,
             return_predictions: bool = False, keep_images: bool = True):
    """Score a model with the two outputs on ``data``: :class:`~mnist_loc.data.Digits` (the fixed
    canvases of ``task``'s ``split`` at placement ``seed``) or a finite dataset of ``(images,
    {"classification", "bounding_box"})`` batches as :func:`~mnist_loc.data.make_dataset` yields.

    Returns plain Python numbers (JSON-ready): ``num_examples``, ``accuracy``, ``mean_iou``,
    ``median_iou``, ``iou_at_50``/``60``/``75`` (fraction of examples with IoU >= 0.50/0.60/0.75),
    ``box_mse`` (mean over examples and the 4 normalized coordinates), ``detection_accuracy``
    (class right and IoU >= 0.5), ``per_class``: ``{"0": {"count", "accuracy", "mean_iou"}, ...}``
    and, when the true boxes' sizes vary, ``by_size``: ``{"small" | "medium" | "large": {"count",
    "accuracy", "mean_iou", "iou_at_50", "iou_at_75"}}`` by the true box's area in canvas pixels
    (``SIZE_BUCKETS``); ``tta`` (None, or what test-time augmentation was used) and
    ``eval_seconds`` (wall time of the predictions). With ``return_predictions``, ``(report,
    predictions)``, the predictions as :func:`predict_dataset` gives them (``keep_images``
    is the detector's and changes nothing here).
    """
    if threshold is not None:
        raise ValueError("threshold is a detector's count threshold; this model answers one digit per canvas")
    if isinstance(data, Digits):
        data = make_dataset(split, data, task=task, batch_size=scene_batch_size(task), seed=seed, training=False)
    dataset = data
    canvas_size = check_dataset(dataset, model_canvas_size(model))
    start = time.perf_counter()
    p = predict_dataset(model, dataset, tta=tta)
    seconds = time.perf_counter() - start
    result = report(p["true_labels"], p["labels"], p["true_boxes"], p["boxes"], num_classes=p["probabilities"].shape[-1],
                    canvas_size=canvas_size)
    result = {**result, "tta": TTA_DESCRIPTION if tta else None, "eval_seconds": seconds}
    return (result, p) if return_predictions else result


def format_report(report: dict, title: str = "", class_names=None) -> str:
    """The report as a fixed-width text table: headline numbers (with the prediction time
    and any test-time augmentation), per size bucket (when sizes vary), then per class
    (named by ``class_names`` when given)."""
    rows = [
        ("examples", f"{report['num_examples']:,}"),
        ("accuracy", f"{report['accuracy']:.4f}"),
        ("mean IoU", f"{report['mean_iou']:.4f}"),
        ("median IoU", f"{report['median_iou']:.4f}"),
        ("IoU >= 0.50", f"{report['iou_at_50']:.4f}"),
        ("IoU >= 0.60", f"{report['iou_at_60']:.4f}"),
        ("IoU >= 0.75", f"{report['iou_at_75']:.4f}"),
        ("box MSE", f"{report['box_mse']:.3g}"),
        ("detection accuracy", f"{report['detection_accuracy']:.4f}"),
    ]
    if "eval_seconds" in report:
        rows.append(("predict seconds", f"{report['eval_seconds']:.2f}"))
    lines = [title] if title else []
    lines += [f"  {name:<20}{value:>10}" for name, value in rows]
    if report.get("tta"):
        lines.append(f"  with {report['tta']}")

    def cell(value):
        return "-" if value is None else f"{value:.4f}"

    if "by_size" in report:
        lines.append(f"  {'size (box area)':<22}{'count':>7}{'accuracy':>10}{'mean IoU':>10}{'IoU>=.5':>9}{'IoU>=.75':>9}")
        for (name, lo, hi), row in zip(SIZE_BUCKETS, report["by_size"].values()):
            span = f"< {hi**0.5:.0f}^2" if lo == 0 else (f">= {lo**0.5:.0f}^2" if hi == float("inf") else f"{lo**0.5:.0f}^2-{hi**0.5:.0f}^2")
            lines.append(
                f"  {name + ' ' + span:<22}{row['count']:>7}{cell(row['accuracy']):>10}{cell(row['mean_iou']):>10}"
                f"{cell(row['iou_at_50']):>9}{cell(row['iou_at_75']):>9}"
            )
    names = list(class_names) if class_names else None
    width = max([6, *(len(n) + 1 for n in names or [])])
    lines.append(f"  {'class' if names else 'digit':<{width}}{'count':>7}{'accuracy':>10}{'mean IoU':>10}")
    for label, row in report["per_class"].items():
        name = names[int(label)] if names and int(label) < len(names) else label
        lines.append(f"  {name:<{width}}{row['count']:>7}{cell(row['accuracy']):>10}{cell(row['mean_iou']):>10}")
    return "\n".join(lines)


def comparison_table(reports: dict) -> str:
    """A Markdown table comparing reports: ``{row name: report}`` (see :func:`evaluate`).

    Columns: accuracy, mean and median IoU, IoU >= 0.5 / 0.75, and mean IoU per size
    bucket where the report has one. Missing values show as a dash.
    """
    def cell(value, percent=False):
        if value is None:
            return "–"
        return f"{value:.2%}" if percent else f"{value:.4f}"

    buckets = [name for name, _, _ in SIZE_BUCKETS]
    header = ["", "accuracy", "mean IoU", "median IoU", "IoU ≥ 0.5", "IoU ≥ 0.75", *(f"mean IoU, {b}" for b in buckets)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in reports.items():
        by_size = r.get("by_size", {})
        row = [
            name, cell(r.get("accuracy")), cell(r.get("mean_iou")), cell(r.get("median_iou")),
            cell(r.get("iou_at_50"), True), cell(r.get("iou_at_75"), True),
            *(cell(by_size.get(b, {}).get("mean_iou")) for b in buckets),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def picture(task, digits, predictions: dict, split: str, seed: int, count: int):
    """The first ``count`` canvases of ``split`` with true (green) and predicted (red) boxes."""
    from .plots import plot_canvases

    first = slice(0, count)
    images, labels, boxes = canvases_at(split, range(count), task=task, seed=seed, digits=digits)
    return plot_canvases(images, boxes, predictions["boxes"][first], true_labels=labels, pred_labels=predictions["labels"][first],
                         ious=iou(predictions["boxes"][first], boxes))


def print_predictions(paths, predictions: dict, canvas_size: int, class_names=None) -> list:
    """``predict``'s lines on the command line, one per image: digit, confidence, box in pixels."""
    lines = []
    for path, label, confidence, box in zip(paths, predictions["labels"], predictions["confidence"], predictions["boxes"]):
        pixels = ", ".join(f"{v:.1f}" for v in np.asarray(box) * canvas_size)
        what = f"class {class_names[label]}" if class_names else f"digit {label}"
        lines.append(f"{path}: {what} (confidence {confidence:.3f}), box [{pixels}] px")
    return lines


def draw_predictions(images, predictions: dict, class_names=None):
    """The images with their predicted boxes and classes (``predict --draw``)."""
    from .plots import plot_canvases

    return plot_canvases(images, None, predictions["boxes"], pred_labels=predictions["labels"])


COLUMNS = (  # the table's: (title, metrics key, format, scale, offset)
    ("error %", "accuracy", "{:.2f}", -100.0, 100.0),
    ("accuracy", "accuracy", "{:.4f}", 1.0, 0.0),
    ("mean IoU", "mean_iou", "{:.4f}", 1.0, 0.0),
    ("IoU ≥ 0.5", "iou_at_50", "{:.2f}%", 100.0, 0.0),
)
