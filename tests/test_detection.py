"""Scoring detections: COCO AP by pycocotools, counting and fully-right canvases, by hand."""

import numpy as np
import pytest

from mnist_loc.detection import (
    choose_count_threshold, coco_metrics, count_confusion, detection_report, digit_matches, found_by_size, fully_right, recall_at_k,
)

S = 50


def px(*boxes):
    return np.asarray(boxes, np.float32) / S


# Two canvases, class 0 only. Canvas 0: digits A, B; canvas 1: none.
TRUE_LABELS = np.array([[0, 0], [-1, -1]])
TRUE_BOXES = np.stack([px((2, 2, 12, 22), (30, 10, 40, 30)), px((0, 0, 0, 0), (0, 0, 0, 0))])


def detections(rows):
    """Per canvas a list of (label, box px, score) -> padded arrays [N, 3]."""
    boxes = np.zeros((len(rows), 3, 4), np.float32)
    labels = np.full((len(rows), 3), -1, np.int32)
    scores = np.zeros((len(rows), 3), np.float32)
    for i, row in enumerate(rows):
        for j, (label, box, score) in enumerate(row):
            boxes[i, j], labels[i, j], scores[i, j] = px(box)[0], label, score
    return {"boxes": boxes, "labels": labels, "scores": scores}


def test_coco_ap_of_a_hand_computed_case():
    # Ranked: A exactly (0.9, TP), a false one on the empty canvas (0.8, FP), B exactly (0.7, TP).
    # Precision/recall: 1/1 at 0.5, 1/2 at 0.5, 2/3 at 1.0. COCO interpolates precision as the best
    # to the right over 101 recall points: 51 points (0 .. 0.50) at 1, 50 points (0.51 .. 1) at 2/3.
    found = detections([[(0, (2, 2, 12, 22), 0.9), (0, (30, 10, 40, 30), 0.7)], [(0, (5, 5, 15, 25), 0.8)]])
    metrics = coco_metrics(TRUE_LABELS, TRUE_BOXES, found["boxes"], found["labels"], found["scores"], num_classes=10, canvas_size=S)
    expected = (51 + 50 * 2 / 3) / 101
    for key in ("ap", "ap50", "ap75"):
        assert metrics[key] == pytest.approx(expected, abs=1e-6), key
    assert metrics["ar10"] == pytest.approx(1.0) and metrics["ar20"] == pytest.approx(1.0)
    assert metrics["ap50_per_class"]["0"] == pytest.approx(expected, abs=1e-6)
    assert metrics["ap50_per_class"]["5"] is None, "a class with no true digit has no AP"


def test_coco_ap_sees_box_quality_between_iou_thresholds():
    # B found with its box 2 px too wide on the right: IoU = 200 / 240 = 0.833 (a hit up to 0.80).
    found = detections([[(0, (2, 2, 12, 22), 0.9), (0, (30, 10, 42, 30), 0.8)], []])
    metrics = coco_metrics(TRUE_LABELS, TRUE_BOXES, found["boxes"], found["labels"], found["scores"], num_classes=10, canvas_size=S)
    assert metrics["ap50"] == pytest.approx(1.0) and metrics["ap75"] == pytest.approx(1.0)
    # IoU thresholds .50 .. .80 (7 of 10): AP 1; .85 .. .95: only A, recall 1/2 -> 51 of 101 points.
    assert metrics["ap"] == pytest.approx((7 * 1.0 + 3 * 51 / 101) / 10, abs=1e-6)


def test_counting_and_fully_right_by_hand():
    true_labels = np.array([[3, 7], [1, -1], [-1, -1], [4, 4]])
    true_boxes = np.stack([px((2, 2, 12, 22), (30, 10, 40, 30))] * 4)
    rows = [
        [(3, (2, 2, 12, 22), 0.9), (7, (30, 10, 40, 30), 0.8)],  # right
        [(1, (2, 2, 12, 22), 0.9), (1, (30, 10, 40, 30), 0.3)],  # an extra below threshold: right at 0.5
        [(2, (2, 2, 12, 22), 0.6)],  # an extra on an empty canvas: counted wrong
        [(4, (2, 2, 12, 22), 0.9), (9, (30, 10, 40, 30), 0.7)],  # counted right, wrong class
    ]
    found = detections(rows)
    right = fully_right(true_labels, true_boxes, found["boxes"], found["labels"], found["scores"], threshold=0.5)
    assert right.tolist() == [True, True, False, False]
    report = detection_report(true_labels, true_boxes, found, threshold=0.5, num_classes=10, canvas_size=S)
    assert report["count_accuracy"] == 0.75 and report["fully_right"] == 0.5 and report["num_digits"] == 5
    assert report["count_confusion"] == [[0, 1, 0], [0, 1, 0], [0, 0, 2]]
    misplaced = detections([[(3, (2, 2, 12, 22), 0.9), (7, (20, 10, 30, 30), 0.8)]])  # IoU 0 with the true 7
    assert not fully_right(true_labels[:1], true_boxes[:1], misplaced["boxes"], misplaced["labels"], misplaced["scores"], 0.5)[0]


def test_count_threshold_is_chosen_where_counting_is_best():
    true_labels = np.array([[1, -1], [1, 2], [-1, -1]])
    scores = np.array([[0.9, 0.3], [0.8, 0.6], [0.2, 0.1]])
    # Counts right on all three only for 0.31 <= t <= 0.60 (30 thresholds): the middle, 0.45.
    assert choose_count_threshold(scores, true_labels) == pytest.approx(0.45)
    assert choose_count_threshold(np.array([[0.9, 0.3]]), np.array([[1, -1]])) == pytest.approx(0.60), "0.31 .. 0.90: 60, the 30th"


def test_recall_at_20_counts_only_each_canvas_best_20():
    # One canvas of 25 digits of class 1, each found exactly, scores falling: AR@10 = 10/25, AR@20 = 20/25,
    # and AP at COCO's 100 detections sees all 25 (precision 1 at every recall).
    boxes = np.array([(4 * i, 0, 4 * i + 3, 5) for i in range(25)], np.float32) / 100
    labels = np.ones((1, 25), np.int32)
    scores = np.linspace(0.99, 0.5, 25, dtype=np.float32)[None]
    metrics = coco_metrics(labels, boxes[None], boxes[None], labels, scores, num_classes=10, canvas_size=100)
    assert metrics["ar10"] == pytest.approx(10 / 25) and metrics["ar20"] == pytest.approx(20 / 25)
    assert metrics["ap"] == pytest.approx(1.0) and metrics["ap50_per_class"]["1"] == pytest.approx(1.0)


def test_which_digits_are_found_and_their_share_by_size():
    true_labels = np.array([[3, 3, 7], [1, -1, -1]])
    true_boxes = np.stack([px((0, 0, 10, 10), (20, 0, 30, 30), (0, 20, 25, 45)), px((5, 5, 45, 25), (0, 0, 0, 0), (0, 0, 0, 0))])
    rows = [
        # the small 3 twice (one digit, one detection: the second is an extra), the 7 with class 2: not found
        [(3, (0, 0, 10, 10), 0.9), (3, (1, 0, 10, 10), 0.8), (2, (0, 20, 25, 45), 0.7)],
        [(1, (5, 5, 45, 25), 0.4)],  # right, but below the threshold
    ]
    found = detections(rows)
    matched = digit_matches(true_labels, true_boxes, found["boxes"], found["labels"], found["scores"], threshold=0.5)
    assert matched.tolist() == [[True, False, False], [False, False, False]]
    assert digit_matches(true_labels, true_boxes, found["boxes"], found["labels"], found["scores"], threshold=0.3)[1, 0]
    # sizes (longer side): 10, 30, 25 and 40 px
    by_size = found_by_size(true_labels, true_boxes, matched, S, edges=(0, 20, 40, 60))
    assert by_size == [{"size": "0-20 px", "digits": 1, "found": 1.0}, {"size": "20-40 px", "digits": 2, "found": 0.0},
                       {"size": "40-60 px", "digits": 1, "found": 0.0}]


def test_evaluation_streams_batches_and_keeps_the_canvases_only_when_asked():
    import tensorflow as tf

    from mnist_loc.detection import evaluate as evaluate_detections
    from mnist_loc.detector import build_detector
    from mnist_loc.task import TASKS

    task = TASKS["multi-mnist"]  # 50 px canvases, up to 2 digits
    rng = np.random.default_rng(0)
    canvases = rng.random((10, 50, 50, 1)).astype(np.float32)
    labels = np.full((10, 2), -1, np.int64)
    labels[:, 0] = rng.integers(0, 10, 10)
    boxes = np.zeros((10, 2, 4), np.float32)
    boxes[:, 0] = [0.1, 0.1, 0.5, 0.5]
    known = tf.data.Dataset.from_tensor_slices((canvases, {"labels": labels, "boxes": boxes})).batch(4)
    unknown = known.filter(lambda x, y: True)  # a length tf.data cannot know beforehand
    assert int(known.cardinality()) == 3 and int(unknown.cardinality()) < 0
    model = build_detector(50, 10, max_count=2)
    reports = []
    for dataset in (known, unknown):
        report, predictions = evaluate_detections(model, dataset, task=task, return_predictions=True)
        np.testing.assert_array_equal(predictions["images"], canvases)
        np.testing.assert_array_equal(predictions["true_labels"], labels)
        assert predictions["scores"].shape[0] == 10
        reports.append({k: v for k, v in report.items() if k != "eval_seconds"})
    assert reports[0] == reports[1]
    _, without = evaluate_detections(model, known, task=task, return_predictions=True, keep_images=False)
    assert "images" not in without and without["boxes"].shape[0] == 10


def test_every_canvas_lands_in_the_count_confusion_and_over_counts_stay_off_the_diagonal():
    matrix = count_confusion([0, 1, 2, 2, 2], [0, 1, 2, 3, 4])
    assert np.sum(matrix) == 5 and np.trace(matrix) == 3
    assert matrix[2] == [0, 0, 1, 1, 1] and len(matrix) == 5
    assert count_confusion([2, 1], [0, 0]) == [[0, 0, 0], [1, 0, 0], [1, 0, 0]], "under-counts below the diagonal"


def test_recall_at_k_takes_each_canvas_best_k_of_any_class_where_cocos_ar_counts_per_class():
    # One canvas, digits of classes 1 and 2. Its best two detections are a wrong 5 and the right 1;
    # the right 2 comes third. Per canvas at k = 2: one digit of two. COCO's AR@10 caps detections
    # per class, so the 2 is still among class 2's best ten: recall 1 at every IoU (exact boxes).
    true_labels = np.array([[1, 2]])
    true_boxes = px((2, 2, 12, 22), (30, 10, 40, 30))[None]
    found = detections([[(5, (20, 30, 30, 45), 0.9), (1, (2, 2, 12, 22), 0.8), (2, (30, 10, 40, 30), 0.7)]])
    assert recall_at_k(true_labels, true_boxes, found["boxes"], found["labels"], found["scores"], k=2) == 0.5
    assert recall_at_k(true_labels, true_boxes, found["boxes"], found["labels"], found["scores"], k=3) == 1.0
    coco = coco_metrics(true_labels, true_boxes, found["boxes"], found["labels"], found["scores"], num_classes=10, canvas_size=S)
    assert coco["ar10"] == pytest.approx(1.0)
    report = detection_report(true_labels, true_boxes, found, threshold=0.5, num_classes=10, canvas_size=S)
    assert report["recall_k"] == 2 and report["recall_at_k"] == 0.5


def test_the_count_threshold_comes_from_one_prediction_pass_without_cocoeval(monkeypatch):
    from conftest import fake_digits
    from mnist_loc import detection
    from mnist_loc.detector import build_detector, count_threshold
    from mnist_loc.task import Task

    task = Task(canvas_size=32, box="ink", count=(0, 2), rules="air", canvases=(16, 12, 12))
    model = build_detector(32, 10, max_count=2)
    monkeypatch.setattr(detection, "coco_metrics", lambda *a, **k: pytest.fail("calibration ran COCOeval"))
    options = detection.calibrate(model, fake_digits(), task)
    assert options["threshold"] in detection.THRESHOLDS and count_threshold(model) == pytest.approx(options["threshold"])
