"""Scoring detections: COCO's metrics by the official implementation, and counting.

For any model with the detector's outputs (:mod:`mnist_loc.detector`). COCO's AP and AR
come from ``pycocotools``' ``COCOeval`` (never re-implemented here), with one area range,
"all": COCO's small / medium / large buckets (32² and 96² px) mean nothing on canvases of
50 px. What AIR's readers look for is added: *count accuracy* (the detections scoring at
least the count threshold are as many as the digits) and *fully right* (every digit found
with its class at IoU >= 0.5, nothing extra). Boxes are ``[xmin, ymin, xmax, ymax]``
normalized to the canvas, as everywhere.
"""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np

from .boxes import iou_tensor
from .data import Digits, make_dataset, scene_batch_size
from .task import get_task
from .detector import MAX_DETECTIONS, count_threshold, decode

DEFAULT_THRESHOLD = 0.5  # for a model that saves none (a model of your own)
COCO_MAX_DETECTIONS = (1, 10, 20, 100)  # COCO's 1, 10, 100, and 20: the most digits a dense scene holds
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)  # the count thresholds tried on validation canvases


PIXELS_PER_BATCH = 500 * 50 * 50  # canvas pixels per forward pass: 500 canvases of 50 px, 27 of 300 px


def detections_kept(max_count: int) -> int:
    """Detections kept per canvas for a task of up to ``max_count`` digits: five per digit,
    at least :data:`~mnist_loc.detector.MAX_DETECTIONS` (10 at AIR's two digits, COCO's 100 at 20)."""
    return max(MAX_DETECTIONS, 5 * int(max_count))


def predict_detections(model, canvases, batch_size: int = 500, threshold: float | None = None,
                       max_detections: int | None = None) -> dict:
    """Detections on float32 ``[N, S, S, 1]`` canvases, best first per canvas.

    Returns ``{"boxes": float32 [N, M, 4], "labels": int32 [N, M] (-1 where nothing),
    "scores": float32 [N, M] (sorted, highest first), "counts": int64 [N]}``, ``M`` =
    ``max_detections`` (default: :func:`detections_kept` of the model's count head's ``K``,
    else :data:`~mnist_loc.detector.MAX_DETECTIONS`); ``counts`` are the detections scoring at least ``threshold``
    (default: the one saved in the model, else 0.5). At most ``batch_size`` canvases and
    :data:`PIXELS_PER_BATCH` pixels go through the model at once.
    """
    result, _ = _detect(model, canvases, batch_size, max_detections)
    result["counts"] = (result["scores"] >= _threshold(model, threshold)).sum(axis=1).astype(np.int64)
    return result


def _detect(model, canvases, batch_size: int, max_detections: int | None):
    """:func:`predict_detections` without counts, and the model's number of classes."""
    from .evaluation import _forward

    forward = _forward(model, False)  # one graph per model, kept between calls
    size = canvases.shape[1]
    batch_size = max(1, min(int(batch_size), PIXELS_PER_BATCH // (size * size)))
    parts, num_classes = [], None
    for i in range(0, len(canvases), batch_size):
        outputs = forward(canvases[i: i + batch_size])
        num_classes = outputs["detections"].shape[-1] - 4
        if max_detections is None:
            max_detections = detections_kept(outputs["count"].shape[-1] - 1) if "count" in outputs else MAX_DETECTIONS
        parts.append(decode(outputs["detections"], size, max_detections, count=outputs.get("count")))
    return {k: np.concatenate([p[k] for p in parts]) for k in ("boxes", "labels", "scores")}, num_classes


def _threshold(model, threshold):
    if threshold is not None:
        return float(threshold)
    saved = count_threshold(model)
    return DEFAULT_THRESHOLD if saved is None else saved


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
    ``boxes`` ``[N, M, 4]``, ``labels`` ``[N, M]`` (-1: nothing), ``scores`` ``[N, M]``.
    AP is at COCO's 100 detections per canvas; a class with no true digit has AP None.
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


def fully_right(true_labels, true_boxes, boxes, labels, scores, threshold: float) -> np.ndarray:
    """bool ``[N]``: the detections scoring >= ``threshold`` match the canvas's digits one to
    one, each with its class at IoU >= 0.5 (:func:`digit_matches`), none left over."""
    present = np.asarray(true_labels) >= 0
    counted = ((np.asarray(scores) >= threshold) & (np.asarray(labels) >= 0)).sum(axis=1)
    found = digit_matches(true_labels, true_boxes, boxes, labels, scores, threshold)
    return (counted == present.sum(axis=1)) & np.all(found | ~present, axis=1)


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
    counted = (predictions["scores"] >= threshold).sum(axis=1)
    truth = (np.asarray(true_labels) >= 0).sum(axis=1)
    right = fully_right(true_labels, true_boxes, predictions["boxes"], predictions["labels"], predictions["scores"], threshold)
    kept = np.where(predictions["scores"] >= threshold, predictions["labels"], -1)
    classes_right = np.array([sorted(t[t >= 0]) == sorted(k[k >= 0]) for t, k in zip(np.asarray(true_labels), kept)])
    return np.select([right, counted < truth, counted > truth, ~classes_right], ["right", "missed", "extra", "wrong class"], "loose box")


def unsure(scores, threshold: float, n: int = 10) -> np.ndarray:
    """Indices of the ``n`` canvases with a detection scoring closest to the count threshold
    (either side): where the count could flip."""
    margin = np.abs(np.asarray(scores) - threshold).min(axis=1)
    return np.argsort(margin, kind="stable")[:n]


def detection_report(true_labels, true_boxes, predictions: dict, *, threshold: float, num_classes: int, canvas_size: int) -> dict:
    """The detection report from arrays; see :func:`evaluate_detections`."""
    true_labels, true_boxes = np.asarray(true_labels), np.asarray(true_boxes)
    boxes, labels, scores = predictions["boxes"], predictions["labels"], predictions["scores"]
    truth = (true_labels >= 0).sum(axis=1)
    counts = (scores >= threshold).sum(axis=1)
    return {
        "num_examples": int(len(true_labels)),
        "num_digits": int(truth.sum()),
        **coco_metrics(true_labels, true_boxes, boxes, labels, scores, num_classes=num_classes, canvas_size=canvas_size),
        "count_accuracy": float((counts == truth).mean()),
        "fully_right": float(fully_right(true_labels, true_boxes, boxes, labels, scores, threshold).mean()),
        "count_threshold": float(threshold),
        "count_confusion": np.histogram2d(truth, counts, bins=[np.arange(truth.max() + 2)] * 2)[0].astype(int).tolist(),
    }


def evaluate_detections(model, data, *, task, split: str = "test", seed: int = 0, threshold: float | None = None,
                        return_predictions: bool = False, keep_images: bool = True):
    """Score any model with the detector's outputs on a detection task's fixed canvases.

    ``data``: :class:`~mnist_loc.data.Digits` (the fixed canvases of ``task``'s ``split`` at
    placement ``seed``) or a finite dataset of ``(images, {"labels", "boxes"})`` batches.
    ``threshold``: the count threshold (default: the model's saved one, else 0.5).

    Returns plain numbers: ``num_examples``, ``num_digits``, ``ap`` (COCO AP@[.50:.95]),
    ``ap50``, ``ap75``, ``ar10``, ``ar20`` (recall at 10 and 20 detections per canvas, of
    :func:`detections_kept` kept), ``ap50_per_class`` ``{"0": AP50 or None, ...}``,
    ``count_accuracy``, ``fully_right``, ``count_threshold``, ``count_confusion`` (rows: true
    count, columns: counted) and ``eval_seconds`` (predicting and scoring, not drawing).
    With ``return_predictions``, also ``(report, predictions)``: :func:`predict_detections`'
    arrays, ``true_labels``, ``true_boxes``, ``threshold`` and, with ``keep_images``, the
    canvases as ``images`` float32 ``[N, S, S, 1]``. Batches are scored as they are drawn, so
    without the images a split's canvases are never all in memory at once.
    """
    if isinstance(data, Digits):
        data = make_dataset(split, data, task=task, batch_size=scene_batch_size(get_task(task)), seed=seed, training=False)
    threshold = _threshold(model, threshold)
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
    predictions["counts"] = (predictions["scores"] >= threshold).sum(axis=1).astype(np.int64)
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


def top_detection(model, dataset) -> dict:
    """A detector's best detection per canvas of a single-digit dataset, as
    :func:`mnist_loc.evaluation.predict_dataset` gives a two-headed model's answer:
    ``true_labels``, ``true_boxes``, ``labels`` (0 where nothing was found), ``confidence``
    (its score), ``boxes`` ``[N, 4]``, and ``num_classes``."""
    parts = [(x.numpy(), y["classification"].numpy().argmax(-1), y["bounding_box"].numpy()) for x, y in dataset]
    canvases, true_labels, true_boxes = (np.concatenate(p) for p in zip(*parts))
    found, num_classes = _detect(model, canvases, 500, MAX_DETECTIONS)
    return {"true_labels": true_labels, "true_boxes": true_boxes, "labels": np.maximum(found["labels"][:, 0], 0).astype(np.int64),
            "confidence": found["scores"][:, 0], "boxes": found["boxes"][:, 0], "num_classes": num_classes}


def format_detection_report(report: dict, title: str = "", class_names=None) -> str:
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
        f"AR@10 / AR@20     {report['ar10']:.4f} / {report.get('ar20', float('nan')):.4f}",
        f"count accuracy    {report['count_accuracy']:.2%}  (score >= {report['count_threshold']:.2f})",
        f"fully right       {report['fully_right']:.2%}",
        f"AP50 per class    {per_class}",
    ]
    if report.get("eval_seconds") is not None:
        lines.append(f"eval seconds      {report['eval_seconds']:.1f}")
    return "\n".join(lines)
