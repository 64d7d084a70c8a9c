"""Predictions and the evaluation report, for any Keras model with the two outputs."""

from __future__ import annotations

import time
import weakref

import keras
import numpy as np
import tensorflow as tf

from .boxes import SIZE_BUCKETS, iou
from .data import Digits, make_dataset, scene_batch_size
from .task import get_task

IOU_THRESHOLDS = (0.5, 0.6, 0.75)
TEST_SEED = 0  # a task's fixed test canvases: one placement, the same for every training seed


def to_unit_float(pixels, name: str = "images") -> np.ndarray:
    """Pixels as float32 in [0, 1]: uint8 is scaled by 1/255, floats must already be in range.

    Raises TypeError for other dtypes and ValueError for an empty array, NaN/inf or
    out-of-range values, each message starting with ``name``.
    """
    array = np.asarray(pixels)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    else:
        raise TypeError(f"{name} must be uint8 or float, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name}: empty array (shape {array.shape})")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: NaN or infinite pixels")
    if array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(f"{name}: float pixels must lie in [0, 1], got range [{array.min():g}, {array.max():g}]")
    return array


def check_images(images, canvas_size: int) -> np.ndarray:
    """Return canvases as float32 ``[N, S, S, 1]`` in [0, 1], or raise naming the problem.

    Accepts ``[S, S]``, ``[S, S, 1]``, ``[N, S, S]`` or ``[N, S, S, 1]``; uint8 (0..255,
    scaled by 1/255) or floating point in [0, 1]. Raises TypeError for other dtypes,
    ValueError for empty input, a wrong rank, size or channel count, NaN/inf pixels
    or float values outside [0, 1].
    """
    array = to_unit_float(images, "images")
    if array.ndim == 2:
        array = array[None, :, :, None]
    elif array.ndim == 3:
        # [H, W, C] when the first two sides match and C looks like channels, else [N, H, W].
        is_single = array.shape[0] == array.shape[1] and array.shape[2] in (1, 3, 4)
        array = array[None] if is_single else array[..., None]
    elif array.ndim != 4:
        raise ValueError(f"images must have rank 2 to 4 ([N,] S, S[, 1]), got shape {array.shape}")
    if array.shape[-1] != 1:
        raise ValueError(f"images must have 1 channel (grayscale), got {array.shape[-1]} in shape {array.shape}")
    if array.shape[1:3] != (canvas_size, canvas_size):
        raise ValueError(
            f"images must be {canvas_size}x{canvas_size} canvases for this model, got {array.shape[1]}x{array.shape[2]}"
        )
    return array


def check_dataset(dataset: tf.data.Dataset, canvas_size: int | None = None) -> int:
    """Raise naming the problem unless ``dataset`` yields ``(float32 [B, S, S, 1], targets)``
    with ``targets = {"classification": [B, C], "bounding_box": [B, 4]}``; return ``S``.

    ``canvas_size``: the side the model expects, if it declares one."""
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict)):
        raise ValueError("the dataset must yield (images, {'classification': ..., 'bounding_box': ...}) batches, as make_dataset does")
    images, targets = spec
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


def model_canvas_size(model: keras.Model) -> int | None:
    """The canvas side a model declares in its input (functional models), else None.

    Subclassed models declare none; then the canvases' own size is used.
    """
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, tuple) and len(shape) == 4 and isinstance(shape[1], int):
        return shape[1]
    return None


# Test-time augmentation: the canvas and four copies shifted 2 px right, left, down and up
# (zero-filled); class probabilities are averaged, boxes shifted back and averaged. Chosen on
# the validation canvases (README, "Time to quality"); it costs five forward passes.
TTA_SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))
TTA_DESCRIPTION = "test-time augmentation: mean of the canvas and 4 copies shifted by 2 px"


# One graph function per (model, tta), kept while the model lives: a fresh tf.function per
# call would be traced again every time (TensorFlow warns after five retracings).
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(model: keras.Model, tta: bool):
    """A graph function ``[B, S, S, 1] -> {"classification", "bounding_box"}``, averaged
    over the :data:`TTA_SHIFTS` views when ``tta``. Our own function rather than
    predict_on_batch, which under a MirroredStrategy returns every replica's copy."""
    functions = _FORWARDS.setdefault(model, {})
    if tta not in functions:
        functions[tta] = _make_forward(weakref.ref(model), tta)  # a weak reference, or the cache would keep the model
    return functions[tta]


def _make_forward(model_ref, tta: bool):
    if not tta:
        return tf.function(lambda x: model_ref()(x, training=False), autograph=False, reduce_retracing=True)
    margin = max(abs(v) for shift in TTA_SHIFTS for v in shift)

    def averaged(x):
        size = int(x.shape[1])
        offsets = tf.constant([[dx, dy, dx, dy] for dx, dy in TTA_SHIFTS], tf.float32) / size
        padded = tf.pad(tf.cast(x, tf.float32), [[0, 0], [margin, margin], [margin, margin], [0, 0]])
        # A view shifted by (dx, dy) reads the padded canvas from (margin - dy, margin - dx).
        views = [padded[:, margin - dy: margin - dy + size, margin - dx: margin - dx + size, :] for dx, dy in TTA_SHIFTS]
        out = model_ref()(tf.concat(views, 0), training=False)  # one pass over all views
        n = len(TTA_SHIFTS)
        probabilities = tf.reshape(out["classification"], (n, -1, out["classification"].shape[-1]))
        boxes = tf.reshape(out["bounding_box"], (n, -1, 4)) - offsets[:, None, :]
        return {"classification": tf.reduce_mean(probabilities, 0), "bounding_box": tf.reduce_mean(boxes, 0)}

    return tf.function(averaged, autograph=False, reduce_retracing=True)


def model_canvases(model: keras.Model, images, canvas_size: int | None = None) -> np.ndarray:
    """``images`` checked as canvases for ``model`` (:func:`check_images`): float32
    ``[N, S, S, 1]``, ``S`` being ``canvas_size``, else what the model declares, else the
    images' own side."""
    size = canvas_size or model_canvas_size(model)
    if size is None:
        shape = np.shape(images)
        size = shape[1] if len(shape) == 4 or (len(shape) == 3 and shape[0] != shape[1]) else shape[0]
    return check_images(images, int(size))


def is_detector(model: keras.Model, canvas_size: int) -> bool:
    """Whether ``model`` has the detector's outputs ``{"detections": ...}`` (:mod:`mnist_loc.detector`)."""
    outputs = model(np.zeros((1, canvas_size, canvas_size, 1), np.float32), training=False)
    return isinstance(outputs, dict) and "detections" in outputs


def predict(model: keras.Model, images, batch_size: int = 500, *, tta: bool = False, canvas_size: int | None = None) -> dict:
    """Run any model with the two outputs on canvases (see :func:`check_images` for accepted forms).

    A model with the detector's outputs answers several digits per canvas instead:
    ``{"boxes": float32 [N, M, 4], "labels": int32 [N, M] (-1 where nothing), "scores":
    float32 [N, M] (sorted, highest first), "counts": int64 [N]}``, ``counts`` the detections
    scoring at least the count threshold saved in the model (see
    :func:`mnist_loc.detection_eval.predict_detections`).

    ``canvas_size``: the side the images must have (default: what the model declares,
    else the images' own). Returns ``{"labels": int64 [N], "confidence": float32 [N],
    "probabilities": float32 [N, C], "boxes": float32 [N, 4]}``, boxes ``[xmin, ymin,
    xmax, ymax]`` normalized to the canvas. ``tta``: average over shifted copies
    (:data:`TTA_SHIFTS`).
    """
    canvases = model_canvases(model, images, canvas_size)
    if is_detector(model, canvases.shape[1]):
        from .detection_eval import predict_detections

        if tta:
            raise ValueError("test-time augmentation is for the two-headed models, not the detector")
        return predict_detections(model, canvases, batch_size)
    forward = _forward(model, tta)
    parts = [forward(canvases[i: i + batch_size]) for i in range(0, len(canvases), batch_size)]
    outputs = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in ("classification", "bounding_box")}
    probabilities = np.asarray(outputs["classification"], np.float32)
    return {
        "labels": probabilities.argmax(-1).astype(np.int64),
        "confidence": probabilities.max(-1),
        "probabilities": probabilities,
        "boxes": np.asarray(outputs["bounding_box"], np.float32),
    }


def predict_dataset(model: keras.Model, dataset: tf.data.Dataset, *, tta: bool = False) -> dict:
    """Predict a finite dataset of ``(images, targets)`` batches in one pass.

    Returns numpy arrays: ``true_labels`` int64 ``[N]``, ``true_boxes`` float32
    ``[N, 4]``, and ``labels``, ``confidence``, ``probabilities``, ``boxes`` as in
    :func:`predict` (``tta`` as there). Works for any model with the two outputs.
    """
    check_dataset(dataset, model_canvas_size(model))
    forward = _forward(model, tta)
    parts = {"true_labels": [], "true_boxes": [], "labels": [], "confidence": [], "probabilities": [], "boxes": []}
    for images, targets in dataset:
        if not np.all(np.isfinite(images.numpy())):
            raise ValueError("the dataset's images contain NaN or infinite pixels")
        outputs = forward(images)
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
    """The evaluation report from arrays; see :func:`evaluate`."""
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


def evaluate(model: keras.Model, data, *, task=None, split: str = "test", seed: int = TEST_SEED, tta: bool = False,
             return_predictions: bool = False):
    """Score any model with the two outputs on ``data``: a :class:`~mnist_loc.data.Digits`
    (then the fixed canvases of ``task``'s ``split`` at placement ``seed``, by default the
    test canvases every run is scored on) or a finite ``tf.data.Dataset`` of ``(images,
    targets)`` batches as :func:`~mnist_loc.data.make_dataset` yields them.

    With ``return_predictions``, returns ``(report, predictions)``, the predictions as
    :func:`predict_dataset` gives them, so nothing needs predicting twice.

    Returns plain Python numbers (JSON-ready): ``num_examples``, ``accuracy``,
    ``mean_iou``, ``median_iou``, ``iou_at_50``/``60``/``75`` (fraction of examples
    with IoU >= 0.50/0.60/0.75), ``box_mse`` (mean over examples and the 4
    normalized coordinates), ``detection_accuracy`` (class right and IoU >= 0.5),
    ``per_class``: ``{"0": {"count", "accuracy", "mean_iou"}, ...}`` (one entry per class
    of the model), and, when the true boxes' sizes vary, ``by_size``: ``{"small" |
    "medium" | "large": {"count", "accuracy", "mean_iou", "iou_at_50", "iou_at_75"}}``
    by the true box's area in canvas pixels (see ``SIZE_BUCKETS``); ``tta`` (None, or
    what test-time augmentation was used) and ``eval_seconds`` (wall time of the predictions).

    The detector (a model with its outputs) on a task with several digits is scored by
    :func:`mnist_loc.detection_eval.evaluate_detections` (COCO AP, counting); on a
    single-digit task by its best detection, as above.
    """
    dataset = make_dataset(split, data, task=task, batch_size=scene_batch_size(get_task(task)), seed=seed, training=False) if isinstance(data, Digits) else data
    spec = dataset.element_spec
    several = isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict) and "labels" in spec[1]
    canvas_size = spec[0].shape[1] if several else check_dataset(dataset, model_canvas_size(model))
    if is_detector(model, canvas_size):
        from .detection_eval import evaluate_detections, top_detection

        if tta:
            raise ValueError("test-time augmentation is for the two-headed models, not the detector")
        if several:
            return evaluate_detections(model, dataset, task=task, return_predictions=return_predictions)
        start = time.perf_counter()
        p = top_detection(model, dataset)
    elif several:
        raise ValueError("a task with several digits per canvas needs a model with the detector's outputs "
                         "({'detections': ...}, mnist_loc.detector); this model answers one digit per canvas")
    else:
        start = time.perf_counter()
        p = predict_dataset(model, dataset, tta=tta)
    seconds = time.perf_counter() - start
    num_classes = p["probabilities"].shape[-1] if "probabilities" in p else p["num_classes"]
    result = report(p["true_labels"], p["labels"], p["true_boxes"], p["boxes"], num_classes=num_classes, canvas_size=canvas_size)
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
