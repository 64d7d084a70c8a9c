"""Several digits per canvas: the detector's kind of answer, boxes with classes, scores and a count.

Everything a run asks of this kind, by the names :mod:`mnist_loc.localization` uses too, for any
Keras model with the detector's outputs (:mod:`mnist_loc.detector`). COCO's AP and AR come from
``pycocotools``' ``COCOeval`` with one area range, "all" (COCO's size buckets mean little on 50 px
canvases); added are what AIR's readers look for: *count accuracy*, *fully right* (every digit
found with its class at IoU >= 0.5, nothing extra) and *recall at k per canvas*. Boxes are
``[xmin, ymin, xmax, ymax]`` normalized to the canvas.
"""

from __future__ import annotations

import contextlib
import functools
import io
import statistics
import time

import keras
import numpy as np

from . import localization
from .artifacts import read_metrics, spread
from .boxes import iou_tensor
from .config import DETECTORS
from .data import Digits, canvases_at, make_dataset, scene_batch_size
from .detector import (
    MAX_DETECTIONS, build_detector, compile_detector, count_targets, decode, detections_kept, grid_stride,
    pack_targets, saved_defaults, set_count_threshold,
)
from .inference import ModelOutputError, batch_slices, forward, model_kind, output_shapes
from .model import trunk_policy
from .task import get_task

MODEL_NAME = "mnist_loc_detector"  # build_detector's, the default model of this kind
HEADLINE = ("ap", "count_accuracy")  # what a re-scored run is compared on
COCO_MAX_DETECTIONS = (1, 10, 20, 100)  # COCO's 1, 10, 100, and 20: the most digits a dense scene holds
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)  # the count thresholds tried on validation canvases


def default_model(config, num_classes: int) -> keras.Model:
    """The package's detector for ``config.task``: :func:`~mnist_loc.detector.build_detector` in
    the shape ``config.DETECTORS[config.detector]``, a count head for the task's maximum count,
    the trunk's dtype from ``config.mixed_precision``; uncompiled."""
    return build_detector(config.task.canvas_size, num_classes, max_count=config.task.max_count,
                          dtype_policy=trunk_policy(config.mixed_precision), **DETECTORS[config.detector])


def check_outputs(model: keras.Model, task, num_classes: int) -> dict:
    """Raise :class:`~mnist_loc.inference.ModelOutputError`, naming what is wrong, unless
    ``model`` maps float32 ``[B, S, S, 1]`` canvases to ``{"detections": [B, ceil(S/s), ceil(S/s),
    C + 4]}`` for a stride ``s`` in :data:`~mnist_loc.detector.STRIDES`, optionally with
    ``"count": [B, K + 1]`` probabilities, ``K`` at least the task's maximum count. Read from the
    outputs' shapes, traced without running the model. Returns ``{name: shape}`` for B=2."""
    size = task.canvas_size
    grids = "/".join(str(-(-size // s)) for s in (2, 4))
    expected = f"{{'detections': [B, H, H, {num_classes + 4}]}} with H = {grids}, ... (the detector's outputs, mnist_loc.detector)"
    shapes = output_shapes(model, size, batch=2)
    if not (isinstance(shapes, dict) and set(shapes) in ({"detections"}, {"detections", "count"})):
        got = sorted(shapes) if isinstance(shapes, dict) else shapes
        raise ModelOutputError(f"a task with several digits per canvas needs a model with outputs {expected}, got {got}")
    shape = shapes["detections"]
    if len(shape) != 4 or shape[1] != shape[2] or grid_stride(size, shape[1]) is None or shape[3] != num_classes + 4:
        raise ModelOutputError(f"the model's outputs must be {expected}, got {list(shape)} for B=2")
    if "count" in shapes:
        columns = shapes["count"][-1]
        if len(shapes["count"]) != 2:
            raise ModelOutputError(f"the model's 'count' output must be [B, K + 1] probabilities, got {list(shapes['count'])} for B=2")
        if columns < task.max_count + 1:
            raise ModelOutputError(f"the model's 'count' output has {columns} columns (0 .. {columns - 1} digits); the task holds "
                                   f"up to {task.max_count} digits a canvas: it needs at least {task.max_count + 1}")
    return shapes


def compile(model: keras.Model, config, learning_rate, steps_per_execution: int, shapes: dict) -> keras.Model:
    """Compile ``model`` in place with ``config``'s recipe (:func:`mnist_loc.detector.compile_detector`):
    its losses on the outputs ``shapes`` names; ``learning_rate`` a float or a schedule."""
    return compile_detector(model, canvas_size=config.task.canvas_size, count="count" in shapes, learning_rate=learning_rate,
                            box_weight=config.box_loss_weight, class_weight=config.class_loss_weight,
                            ema_momentum=config.ema_momentum, steps_per_execution=steps_per_execution)


def training_targets(shapes: dict):
    """The map from :func:`~mnist_loc.data.make_dataset`'s batches to the detector's targets
    (:func:`_targets`), for a model with the outputs ``shapes``."""
    return functools.partial(_targets, count=shapes["count"][-1] - 1 if "count" in shapes else None)


def _targets(images, targets, count=None):
    """A batch's targets as the detector's losses take them (a single-digit task's as K = 1);
    with ``count`` K, the one-hot number of digits for the count head too."""
    if "labels" not in targets:
        targets = {"labels": keras.ops.argmax(targets["classification"], -1)[:, None], "boxes": targets["bounding_box"][:, None, :]}
    packed = {"detections": pack_targets(targets["labels"], targets["boxes"])}
    if count is not None:
        packed["count"] = count_targets(targets["labels"], count)
    return images, packed


def calibrate(model, digits, task, metrics: dict | None = None) -> dict:
    """The evaluation options this kind chooses on ``task``'s validation canvases:
    ``{"threshold": t}``, the count threshold that counts them best (:func:`choose_count_threshold`)
    after one prediction pass, saved in ``model`` when it can hold it (its ``CountThreshold``
    layer). From a finished run's ``metrics``, the threshold it chose."""
    if task.kind == "localization":  # a detector on one digit a canvas answers with its best detection
        return {}
    if metrics is not None:
        return {"threshold": metrics["count_threshold"]}
    scores, true_labels = [], []
    for x, y in make_dataset("validation", digits, task=task, batch_size=scene_batch_size(task), training=False):
        scores.append(_detect(model, x.numpy(), 500, detections_kept(task.max_count))[0]["scores"])
        true_labels.append(y["labels"].numpy())
    threshold = choose_count_threshold(np.concatenate(scores), np.concatenate(true_labels))
    set_count_threshold(model, threshold)
    return {"threshold": threshold}


def predict(model: keras.Model, canvases: np.ndarray, batch_size: int = 500, *, tta: bool = False, threshold: float | None = None,
            max_detections: int | None = None) -> dict:
    """Detections on checked float32 ``[N, S, S, 1]`` canvases, best first per canvas.

    Returns ``{"boxes": float32 [N, M, 4] ([xmin, ymin, xmax, ymax] normalized to the canvas,
    inside it), "labels": int32 [N, M] (-1 where nothing), "scores": float32 [N, M] (sorted,
    highest first, 0 where nothing), "counts": int64 [N]}``: ``M`` = ``max_detections`` and
    ``counts`` the detections scoring at least ``threshold``, both by default the model's
    saved ones (:func:`mnist_loc.detector.saved_defaults`). At most ``batch_size`` canvases
    and :data:`~mnist_loc.inference.PIXELS_PER_BATCH` pixels go through the model at once.
    """
    if tta:
        raise ValueError("test-time augmentation is for the two-headed models, not the detector")
    saved_threshold, saved_cap = saved_defaults(model)
    threshold = saved_threshold if threshold is None else float(threshold)
    result, _ = _detect(model, canvases, batch_size, max_detections or saved_cap)
    result["counts"] = counted(result, threshold)
    return result


def counted(detections: dict, threshold: float) -> np.ndarray:
    """int64 ``[N]``: per canvas, the detections (label >= 0) scoring at least ``threshold``."""
    return ((np.asarray(detections["scores"]) >= threshold) & (np.asarray(detections["labels"]) >= 0)).sum(axis=1).astype(np.int64)


def _detect(model, canvases, batch_size: int, max_detections: int | None):
    """:func:`predict` without counts, and the model's number of classes."""
    run, size = forward(model, False), canvases.shape[1]  # one graph per model, kept between calls
    parts, num_classes = [], None
    for rows in batch_slices(len(canvases), size, batch_size):
        outputs = run(canvases[rows])
        num_classes = outputs["detections"].shape[-1] - 4
        if max_detections is None:
            max_detections = detections_kept(outputs["count"].shape[-1] - 1) if "count" in outputs else MAX_DETECTIONS
        parts.append(decode(outputs["detections"], size, max_detections, count=outputs.get("count")))
    return {k: np.concatenate([p[k] for p in parts]) for k in ("boxes", "labels", "scores")}, num_classes


def choose_count_threshold(scores, true_labels) -> float:
    """The threshold in :data:`THRESHOLDS` that counts validation canvases best; of equals,
    the middle one (the lower of two middles), away from both edges of the best range.
    ``scores`` float ``[N, M]``, ``true_labels`` int ``[N, K]`` (-1: none)."""
    truth = (np.asarray(true_labels) >= 0).sum(axis=1)
    scores = np.asarray(scores)
    accuracy = np.array([((scores >= t).sum(axis=1) == truth).mean() for t in THRESHOLDS])
    best = THRESHOLDS[accuracy == accuracy.max()]
    return float(best[(len(best) - 1) // 2])


def _pixels(boxes, canvas_size):
    """COCO's ``[x, y, width, height]`` in canvas pixels from normalized boxes."""
    b = np.asarray(boxes, np.float64) * canvas_size
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def coco_metrics(true_labels, true_boxes, boxes, labels, scores, *, num_classes: int, canvas_size: int) -> dict:
    """COCO AP@[.50:.95], AP50, AP75, AR@10, AR@20 and per-class AP50 by ``pycocotools``' COCOeval.

    ``true_labels`` int ``[N, K]`` (-1: no digit), ``true_boxes`` float ``[N, K, 4]``;
    ``boxes`` ``[N, M, 4]``, ``labels`` ``[N, M]`` (-1: nothing), ``scores`` ``[N, M]``; boxes
    ``[xmin, ymin, xmax, ymax]`` normalized to the canvas. Every figure has COCO's official
    meaning: COCOeval caps detections **per canvas and per class**, so AP is at 100 detections
    of each class per canvas, and AR@10 / AR@20 (``ar10``, ``ar20``) average recall over IoU
    0.50:0.95 with up to 10 / 20 detections of each class per canvas (with 10 classes, up to
    100 / 200 a canvas). :func:`recall_at_k` is the per-canvas measure. A class with no true
    digit has AP None.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, results = [], []
    for i in range(len(true_labels)):
        for label, box in zip(true_labels[i], true_boxes[i]):
            if label >= 0:
                xywh = _pixels(box, canvas_size)
                annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label), "bbox": xywh,
                                    "area": xywh[2] * xywh[3], "iscrowd": 0})
        for label, box, score in zip(labels[i], boxes[i], scores[i]):
            if label >= 0:
                results.append({"image_id": i, "category_id": int(label), "bbox": _pixels(box, canvas_size), "score": float(score)})
    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "ar10": 0.0, "ar20": 0.0, "ap50_per_class": {str(c): None for c in range(num_classes)}}
    truth = COCO()
    truth.dataset = {"images": [{"id": i} for i in range(len(true_labels))], "annotations": annotations,
                     "categories": [{"id": c} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress lines
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]
        evaluation.params.maxDets = list(COCO_MAX_DETECTIONS)  # summarize() knows only 3: its averages are read below
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][..., 0, :]  # [IoU 0.50:0.95, recall 0:1, class, max detections], all areas
    recall = evaluation.eval["recall"][..., 0, :]  # [IoU, class, max detections]
    most, at = COCO_MAX_DETECTIONS.index(100), COCO_MAX_DETECTIONS.index

    def average(values):  # COCOeval.summarize()'s: the mean over entries that exist (-1: none)
        values = values[values > -1]
        return float(values.mean()) if values.size else -1.0

    per_class = {str(c): (None if average(precision[0, :, c, most]) == -1 else average(precision[0, :, c, most]))
                 for c in range(num_classes)}
    return {"ap": average(precision[..., most]), "ap50": average(precision[0, ..., most]), "ap75": average(precision[5, ..., most]),
            "ar10": average(recall[..., at(10)]), "ar20": average(recall[..., at(20)]), "ap50_per_class": per_class}


def digit_matches(true_labels, true_boxes, boxes, labels, scores, threshold: float) -> np.ndarray:
    """bool ``[N, K]``: which true digits a detection scoring >= ``threshold`` finds, with its
    class at IoU >= 0.5, one detection per digit (greedy, best score first, each taking the
    free digit of its class it overlaps most); False where there is no digit."""
    true_labels, true_boxes = np.asarray(true_labels), np.asarray(true_boxes, np.float64)
    found = np.zeros(true_labels.shape, bool)
    for i in range(len(true_labels)):
        for label, box, score in zip(labels[i], boxes[i], scores[i]):
            if label < 0 or score < threshold:
                continue
            free = np.flatnonzero((true_labels[i] == label) & ~found[i])
            if free.size:
                overlaps = iou_tensor(np.asarray(box, np.float64)[None], true_boxes[i, free])
                if overlaps.max() >= 0.5:
                    found[i, free[np.argmax(overlaps)]] = True
    return found


def recall_at_k(true_labels, true_boxes, boxes, labels, scores, k: int) -> float:
    """Recall at ``k`` per canvas: the share of true digits found by their canvas's ``k``
    best-scoring detections of any class, each digit matched once, with its class at IoU >=
    0.5 (:func:`digit_matches`). Arrays as :func:`coco_metrics` takes them. None without digits."""
    scores = np.asarray(scores)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    take = lambda a: np.take_along_axis(np.asarray(a), best.reshape(best.shape + (1,) * (np.ndim(a) - 2)), 1)  # noqa: E731
    found = digit_matches(true_labels, true_boxes, take(boxes), take(labels), take(scores), threshold=-np.inf)
    present = np.asarray(true_labels) >= 0
    return float(found[present].mean()) if present.any() else None


def count_confusion(true_counts, counted) -> list:
    """``[[canvases]]``: row the true number of digits, column the number counted, for every
    canvas; the matrix is square, up to the largest of either."""
    true_counts, counted = np.asarray(true_counts, np.int64), np.asarray(counted, np.int64)
    size = int(max(true_counts.max(initial=0), counted.max(initial=0))) + 1
    matrix = np.zeros((size, size), np.int64)
    np.add.at(matrix, (true_counts, counted), 1)
    return matrix.tolist()


def fully_right(true_labels, true_boxes, boxes, labels, scores, threshold: float) -> np.ndarray:
    """bool ``[N]``: the detections scoring >= ``threshold`` match the canvas's digits one to
    one, each with its class at IoU >= 0.5 (:func:`digit_matches`), none left over."""
    present = np.asarray(true_labels) >= 0
    number = counted({"scores": scores, "labels": labels}, threshold)
    found = digit_matches(true_labels, true_boxes, boxes, labels, scores, threshold)
    return (number == present.sum(axis=1)) & np.all(found | ~present, axis=1)


SIZE_EDGES = (0, 15, 30, 45, 60, 75)  # px: a digit's size is its tight box's longer side (a 99 px square's ink: ~75 px)


def found_by_size(true_labels, true_boxes, found, canvas_size: int, edges=SIZE_EDGES) -> list:
    """Share of true digits found (:func:`digit_matches`) by size, one row per bin of
    ``edges``: ``{"size": "20-40 px", "digits": n, "found": share or None}``; a digit's size is
    the longer side of its box in canvas pixels."""
    present = np.asarray(true_labels) >= 0
    boxes = np.asarray(true_boxes)[present] * canvas_size
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    hit = np.asarray(found)[present]
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (size >= lo) & (size < hi)
        rows.append({"size": f"{lo}-{hi} px", "digits": int(inside.sum()), "found": float(hit[inside].mean()) if inside.any() else None})
    return rows


OUTCOMES = ("right", "missed", "extra", "wrong class", "loose box")


def canvas_outcomes(true_labels, true_boxes, predictions: dict, threshold: float) -> np.ndarray:
    """What went wrong on each canvas, the first that applies: ``"missed"`` (fewer detections
    scoring >= ``threshold`` than digits), ``"extra"`` (more), ``"wrong class"`` (as many, but
    a digit's class is not among them), ``"loose box"`` (classes right, a box below IoU 0.5)
    or ``"right"`` (:func:`fully_right`). Returns a str array ``[N]``."""
    number = counted(predictions, threshold)
    truth = (np.asarray(true_labels) >= 0).sum(axis=1)
    right = fully_right(true_labels, true_boxes, predictions["boxes"], predictions["labels"], predictions["scores"], threshold)
    kept = np.where(predictions["scores"] >= threshold, predictions["labels"], -1)
    classes_right = np.array([sorted(t[t >= 0]) == sorted(k[k >= 0]) for t, k in zip(np.asarray(true_labels), kept)])
    return np.select([right, number < truth, number > truth, ~classes_right], ["right", "missed", "extra", "wrong class"], "loose box")


def unsure(scores, threshold: float, n: int = 10) -> np.ndarray:
    """Indices of the ``n`` canvases with a detection scoring closest to the count threshold
    (either side): where the count could flip."""
    margin = np.abs(np.asarray(scores) - threshold).min(axis=1)
    return np.argsort(margin, kind="stable")[:n]


def detection_report(true_labels, true_boxes, predictions: dict, *, threshold: float, num_classes: int, canvas_size: int) -> dict:
    """The detection report from arrays; see :func:`evaluate`."""
    true_labels, true_boxes = np.asarray(true_labels), np.asarray(true_boxes)
    boxes, labels, scores = predictions["boxes"], predictions["labels"], predictions["scores"]
    truth = (true_labels >= 0).sum(axis=1)
    counts = counted(predictions, threshold)
    k = true_labels.shape[1]
    return {
        "num_examples": int(len(true_labels)),
        "num_digits": int(truth.sum()),
        **coco_metrics(true_labels, true_boxes, boxes, labels, scores, num_classes=num_classes, canvas_size=canvas_size),
        "recall_k": int(k),
        "recall_at_k": recall_at_k(true_labels, true_boxes, boxes, labels, scores, k),
        "count_accuracy": float((counts == truth).mean()),
        "fully_right": float(fully_right(true_labels, true_boxes, boxes, labels, scores, threshold).mean()),
        "count_threshold": float(threshold),
        "count_confusion": count_confusion(truth, counts),
    }


def evaluate(model, data, *, task=None, split: str = "test", seed: int = 0, tta: bool = False, threshold: float | None = None,
             return_predictions: bool = False, keep_images: bool = True):
    """Score a model with the detector's outputs on ``data``: :class:`~mnist_loc.data.Digits` (the
    fixed canvases of ``task``'s ``split`` at placement ``seed``) or a finite dataset of ``(images,
    {"labels", "boxes"})`` batches. On a task of one digit per canvas (or a dataset of
    ``{"classification", "bounding_box"}`` targets) its best detection is its answer, scored by
    :func:`mnist_loc.localization.report`.

    ``threshold``: the count threshold (default: the model's saved one, else 0.5). Returns plain
    numbers: ``num_examples``, ``num_digits``, ``ap`` (COCO AP@[.50:.95]), ``ap50``, ``ap75``,
    ``ar10``, ``ar20`` (COCO's AR@10 / AR@20: at most 10 / 20 detections per canvas *per class*,
    :func:`coco_metrics`), ``recall_at_k`` (:func:`recall_at_k`, a canvas's ``recall_k`` = the
    task's maximum count best detections), ``ap50_per_class`` ``{"0": AP50 or None, ...}``,
    ``count_accuracy``, ``fully_right``, ``count_threshold``, ``count_confusion``
    (:func:`count_confusion`) and ``eval_seconds`` (predicting and scoring, not drawing).
    Detections: :func:`~mnist_loc.detector.detections_kept` per canvas. With
    ``return_predictions``, also ``(report, predictions)``: :func:`predict`'s arrays,
    ``true_labels``, ``true_boxes``, ``threshold`` and, with ``keep_images``, the canvases as
    ``images`` float32 ``[N, S, S, 1]``. Batches are scored as they are drawn, so without the
    images a split's canvases are never all in memory at once.
    """
    if tta:
        raise ValueError("test-time augmentation is for the two-headed models, not the detector")
    if isinstance(data, Digits):
        task = get_task(task)
        data = make_dataset(split, data, task=task, batch_size=scene_batch_size(task), seed=seed, training=False)
    if model_kind(model, data.element_spec[0].shape[1]) != "detection":
        raise ValueError("a task with several digits per canvas needs a model with the detector's outputs "
                         "({'detections': ...}, mnist_loc.detector); this model answers one digit per canvas")
    if "labels" not in data.element_spec[1]:
        return _evaluate_best_detection(model, data, return_predictions)
    threshold = saved_defaults(model)[0] if threshold is None else float(threshold)
    images, true_labels, true_boxes, found, seconds = _Rows(data), [], [], [], 0.0
    for x, y in data:
        x = x.numpy()
        true_labels.append(y["labels"].numpy())
        true_boxes.append(y["boxes"].numpy())
        start = time.perf_counter()
        detections, num_classes = _detect(model, x, 500, detections_kept(true_labels[0].shape[1]))
        seconds += time.perf_counter() - start
        found.append(detections)
        if return_predictions and keep_images:
            images.add(x)
    if not found:
        raise ValueError("the dataset is empty")
    start = time.perf_counter()
    true_labels, true_boxes = np.concatenate(true_labels), np.concatenate(true_boxes)
    predictions = {k: np.concatenate([f[k] for f in found]) for k in ("boxes", "labels", "scores")}
    predictions["counts"] = counted(predictions, threshold)
    result = detection_report(true_labels, true_boxes, predictions, threshold=threshold, num_classes=num_classes,
                              canvas_size=x.shape[1])
    result["eval_seconds"] = seconds + time.perf_counter() - start
    if not return_predictions:
        return result
    truth = {"true_labels": true_labels, "true_boxes": true_boxes, "threshold": threshold}
    return result, {**predictions, **truth, **({"images": images.array()} if keep_images else {})}


class _Rows:
    """Batches copied into one array as they come, so a split's canvases are held once and
    never twice (1,000 canvases of 300 px are 343 MiB): sized from the dataset's batch count
    when it is known (pages never written stay free), doubled when it is not."""

    def __init__(self, dataset):
        known = getattr(dataset, "cardinality", lambda: -1)()
        self.batches, self.rows, self.filled = max(int(known), 1), None, 0

    def add(self, batch: np.ndarray):
        if self.rows is None:
            self.rows = np.empty((self.batches * len(batch), *batch.shape[1:]), batch.dtype)
        if self.filled + len(batch) > len(self.rows):
            self.rows = np.concatenate([self.rows[: self.filled], np.empty((max(self.filled, len(batch)), *batch.shape[1:]), batch.dtype)])
        self.rows[self.filled: self.filled + len(batch)] = batch
        self.filled += len(batch)

    def array(self) -> np.ndarray:
        return self.rows[: self.filled]


def _evaluate_best_detection(model, dataset, return_predictions: bool):
    """A detector on single-digit canvases: its best detection per canvas is its answer (the
    class 0 where it found nothing), scored as :func:`mnist_loc.localization.evaluate` scores a
    two-headed model; the predictions have ``true_labels``, ``true_boxes``, ``labels``,
    ``confidence`` (the detection's score) and ``boxes`` ``[N, 4]``."""
    start = time.perf_counter()
    parts = [(x.numpy(), y["classification"].numpy().argmax(-1), y["bounding_box"].numpy()) for x, y in dataset]
    canvases, true_labels, true_boxes = (np.concatenate(p) for p in zip(*parts))
    found, num_classes = _detect(model, canvases, 500, MAX_DETECTIONS)
    p = {"true_labels": true_labels, "true_boxes": true_boxes, "labels": np.maximum(found["labels"][:, 0], 0).astype(np.int64),
         "confidence": found["scores"][:, 0], "boxes": found["boxes"][:, 0]}
    seconds = time.perf_counter() - start
    result = localization.report(true_labels, p["labels"], true_boxes, p["boxes"], num_classes=num_classes,
                                 canvas_size=canvases.shape[1])
    result = {**result, "tta": None, "eval_seconds": seconds}
    return (result, p) if return_predictions else result


def format_report(report: dict, title: str = "", class_names=None) -> str:
    """The detection report as a few aligned lines."""
    names = list(class_names or report["ap50_per_class"])
    per_class = "  ".join(
        f"{name}:{'-' if value is None else f'{value:.3f}'}" for name, value in zip(names, report["ap50_per_class"].values())
    )
    lines = [title] if title else []
    lines += [
        f"canvases          {report['num_examples']:,} ({report['num_digits']:,} digits)",
        f"AP@[.50:.95]      {report['ap']:.4f}",
        f"AP50 / AP75       {report['ap50']:.4f} / {report['ap75']:.4f}",
        f"AR@10 / AR@20     {report['ar10']:.4f} / {report.get('ar20', float('nan')):.4f}  (COCO's: per canvas and class)",
        f"{'recall at ' + str(report.get('recall_k', '?')):<18}{report.get('recall_at_k') or float('nan'):.4f}  (a canvas's best k, any class, IoU >= 0.5)",
        f"count accuracy    {report['count_accuracy']:.2%}  (score >= {report['count_threshold']:.2f})",
        f"fully right       {report['fully_right']:.2%}",
        f"AP50 per class    {per_class}",
    ]
    if report.get("eval_seconds") is not None:
        lines.append(f"eval seconds      {report['eval_seconds']:.1f}")
    return "\n".join(lines)


def picture(task, digits, predictions: dict, split: str, seed: int, count: int):
    """The first ``count`` canvases of ``split`` (drawn again: a run keeps none) with every true
    digit's box (green) and every detection that counts (red)."""
    from .plots import plot_detections

    first = slice(0, count)
    images, _, _ = canvases_at(split, range(count), task=task, seed=seed, digits=digits)
    return plot_detections(images, predictions["true_labels"][first], predictions["true_boxes"][first],
                           {k: predictions[k][first] for k in ("boxes", "labels", "scores")}, predictions["threshold"])


def print_predictions(paths, predictions: dict, canvas_size: int, class_names=None) -> list:
    """``predict``'s lines on the command line, one per image: the count, then each counted
    detection's class, score and box in pixels."""
    lines = []
    for i, path in enumerate(paths):
        count = int(predictions["counts"][i])
        found = [f"{class_names[label] if class_names else label} ({score:.3f}) [{', '.join(f'{v:.1f}' for v in box * canvas_size)}] px"
                 for label, score, box in zip(predictions["labels"][i][:count], predictions["scores"][i][:count],
                                              predictions["boxes"][i][:count])]
        lines.append(f"{path}: {count} digit{'s' if count != 1 else ''}" + (": " + "; ".join(found) if found else ""))
    return lines


def draw_predictions(images, predictions: dict, class_names=None):
    """The images with their counted detections (``predict --draw``)."""
    from .plots import plot_detections

    shown = {k: np.asarray(predictions[k]) for k in ("boxes", "labels", "scores")}
    keep = np.arange(shown["scores"].shape[1])[None, :] < np.asarray(predictions["counts"])[:, None]
    shown["labels"] = np.where(keep, shown["labels"], -1)
    return plot_detections(np.asarray(images)[..., None] if np.ndim(images) == 3 else images, None, None, shown, 0.0,
                           class_names=class_names, captions=[f"{int(c)} found" for c in predictions["counts"]])


COLUMNS = (  # the table's: (title, metrics key, format, scale, offset)
    ("AP", "ap", "{:.4f}", 1.0, 0.0),
    ("AP50", "ap50", "{:.4f}", 1.0, 0.0),
    ("count acc", "count_accuracy", "{:.2f}%", 100.0, 0.0),
    ("fully right", "fully_right", "{:.2f}%", 100.0, 0.0),
)


SEED_COLUMNS = (
    ("AP@[.50:.95]", "ap", "{:.4f}", 1.0), ("AP50", "ap50", "{:.4f}", 1.0), ("AP75", "ap75", "{:.4f}", 1.0),
    ("AR@10", "ar10", "{:.4f}", 1.0), ("AR@20", "ar20", "{:.4f}", 1.0), ("recall@k", "recall_at_k", "{:.4f}", 1.0), ("count acc", "count_accuracy", "{:.2f}%", 100.0),
    ("fully right", "fully_right", "{:.2f}%", 100.0), ("train s", "train_seconds", "{:.0f}", 1.0),
    ("CPU s", "train_cpu_seconds", "{:.0f}", 1.0),
)


def seed_table(folders) -> str:
    """A Markdown table of detection run folders: one row per run (its seed), a row of their
    means (lowest–highest), then per-class AP50 as the mean over the runs."""
    runs = [read_metrics(folder) for folder in folders]
    if not runs or any("ap" not in m for m in runs):
        raise ValueError("seed_table needs run folders of a detection task")
    header = ["run", *(title for title, *_ in SEED_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(SEED_COLUMNS)]
    for m in runs:
        cells = [fmt.format(scale * m[key]) if key in m else "–" for _, key, fmt, scale in SEED_COLUMNS]  # "–": a run saved before the metric
        lines.append(f"| seed {m['config'].get('seed')} | " + " | ".join(cells) + " |")
    if len(runs) > 1:
        cells = [spread([scale * m[key] for m in runs], fmt) if all(key in m for m in runs) else "–"
                 for _, key, fmt, scale in SEED_COLUMNS]
        lines.append(f"| **mean of {len(runs)}** | " + " | ".join(cells) + " |")
    classes = list(runs[0]["ap50_per_class"])
    names = runs[0].get("task", {}).get("class_names") or classes
    lines += ["", "| AP50 per class | " + " | ".join(str(n) for n in names) + " |", "|---|" + "---:|" * len(classes)]
    means = [statistics.mean(m["ap50_per_class"][c] for m in runs) if all(m["ap50_per_class"][c] is not None for m in runs) else None
             for c in classes]
    lines.append(f"| mean of {len(runs)} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in means) + " |")
    return "\n".join(lines)
