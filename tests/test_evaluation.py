import json

import keras
import numpy as np
import pytest

from mnist_loc.data import Digits, make_dataset
from mnist_loc.evaluation import evaluate, predict
from mnist_loc.localization import report
from mnist_loc.model import build_model
from conftest import synthetic_digits


def fixed_canvases(images, labels, batch_size):
    """The fixed test canvases of the course task, drawn from in-memory digits."""
    digits = Digits.from_arrays((images, labels), (images, labels), (images, labels))
    return make_dataset("test", digits, batch_size=batch_size)

S = 75


def oracle(shift=0.0):
    """A model that answers from the canvas itself: always label 3, and the box from
    where the ink is, shifted right by ``shift`` px (the synthetic digits have ink in
    every pixel, so the ink's extent is exactly the 28x28 patch)."""

    def box_from_ink(x):
        ink = keras.ops.cast(x[..., 0] > 0, "float32")
        idx = keras.ops.arange(S, dtype="float32")
        xmin = keras.ops.min(keras.ops.where(keras.ops.max(ink, axis=1) > 0, idx, 1e9), axis=1)
        ymin = keras.ops.min(keras.ops.where(keras.ops.max(ink, axis=2) > 0, idx, 1e9), axis=1)
        return keras.ops.stack([xmin + shift, ymin, xmin + 28 + shift, ymin + 28], axis=1) / S

    def always_three(x):
        return keras.ops.one_hot(keras.ops.full([keras.ops.shape(x)[0]], 3, dtype="int32"), 10)

    inputs = keras.Input((S, S, 1))
    outputs = {
        "classification": keras.layers.Lambda(always_three, output_shape=(10,), name="classification")(inputs),
        "bounding_box": keras.layers.Lambda(box_from_ink, output_shape=(4,), name="bounding_box")(inputs),
    }
    return keras.Model(inputs, outputs)


def test_evaluate_known_answer():
    images, labels = synthetic_digits(20)  # labels 0..9 twice, all pixels non-zero
    ds = fixed_canvases(images, labels, batch_size=6)
    result = evaluate(oracle(shift=0.0), ds)
    json.dumps(result)  # JSON-ready
    assert result["num_examples"] == 20
    assert result["accuracy"] == pytest.approx(0.1)  # always says 3
    assert result["mean_iou"] == pytest.approx(1.0) and result["median_iou"] == pytest.approx(1.0)
    assert result["iou_at_75"] == 1.0 and result["box_mse"] == pytest.approx(0.0, abs=1e-12)
    assert result["detection_accuracy"] == pytest.approx(0.1)
    assert result["per_class"]["3"] == {"count": 2, "accuracy": 1.0, "mean_iou": pytest.approx(1.0)}
    assert result["per_class"]["4"]["accuracy"] == 0.0
    assert sorted(result["per_class"]) == [str(d) for d in range(10)]


def test_evaluate_on_digits_scores_the_fixed_canvases_of_the_task_and_split():
    images, labels = synthetic_digits(20)
    digits = Digits.from_arrays((images[:8], labels[:8]), (images[8:], labels[8:]), (images, labels))
    model = oracle(shift=0.0)
    for split, seed in (("test", 0), ("validation", 3)):
        by_digits = evaluate(model, digits, split=split, seed=seed)
        by_dataset = evaluate(model, make_dataset(split, digits, batch_size=500, seed=seed))
        assert by_digits["num_examples"] == len(digits.split(split)[1])
        assert {k: v for k, v in by_digits.items() if k != "eval_seconds"} == {k: v for k, v in by_dataset.items() if k != "eval_seconds"}


def test_evaluate_shifted_boxes():
    images, labels = synthetic_digits(10)
    result = evaluate(oracle(shift=7.0), fixed_canvases(images, labels, batch_size=4))
    expected = 21 * 28 / (2 * 784 - 21 * 28)  # 0.6: a 7 px shift of a 28 px box
    assert result["mean_iou"] == pytest.approx(expected, abs=1e-5)
    assert result["iou_at_50"] == 1.0 and result["iou_at_75"] == 0.0
    assert result["box_mse"] == pytest.approx(2 * (7 / S) ** 2 / 4, rel=1e-4)


def test_report_thresholds_are_inclusive():
    true = np.array([[0, 0, 10, 10]] * 2, float)
    pred = np.array([[0, 0, 10, 5], [0, 0, 10, 6]], float)  # IoU 0.5 and 0.6 exactly
    r = report([1, 2], [1, 0], true, pred)
    assert r["iou_at_50"] == 1.0 and r["iou_at_60"] == 0.5
    assert r["detection_accuracy"] == 0.5
    assert r["per_class"]["0"] == {"count": 0, "accuracy": None, "mean_iou": None}


def test_predict_shapes_and_uint8_scaling():
    model = oracle()
    canvas = np.zeros((S, S), np.uint8)
    canvas[10:38, 20:48] = 255
    out = predict(model, canvas)
    assert out["labels"].tolist() == [3]
    np.testing.assert_allclose(out["boxes"][0], np.array([20, 10, 48, 38]) / S, atol=1e-6)
    assert predict(model, np.zeros((5, S, S, 1), np.float32))["boxes"].shape == (5, 4)


def test_report_by_size_buckets_hand_computed():
    from mnist_loc.localization import format_report, report

    S = 75
    # true boxes of 10, 28 and 40 px sides: areas 100 (small), 784 (medium), 1600 (large)
    true = np.array([[0, 0, 10, 10], [0, 0, 28, 28], [0, 0, 40, 40], [5, 5, 15, 15]], np.float64) / S
    pred = np.array([[0, 0, 10, 5], [0, 0, 28, 28], [0, 0, 20, 40], [5, 5, 15, 15]], np.float64) / S
    r = report([1, 2, 3, 4], [1, 2, 0, 4], true, pred, canvas_size=S)
    assert r["by_size"]["small"] == {"count": 2, "accuracy": 1.0, "mean_iou": pytest.approx(0.75), "iou_at_50": 1.0, "iou_at_75": 0.5}
    assert r["by_size"]["medium"] == {"count": 1, "accuracy": 1.0, "mean_iou": 1.0, "iou_at_50": 1.0, "iou_at_75": 1.0}
    assert r["by_size"]["large"] == {"count": 1, "accuracy": 0.0, "mean_iou": pytest.approx(0.5), "iou_at_50": 1.0, "iou_at_75": 0.0}
    text = format_report(r, class_names=[f"c{i}" for i in range(10)])
    assert "small < 20^2" in text and "large >= 36^2" in text and "c3 " in text
    same = report([1, 2], [1, 2], true[[1, 1]], pred[[1, 1]], canvas_size=S)
    assert "by_size" not in same, "equal sizes: no buckets"
    xs = np.arange(48, dtype=np.float32)
    shifted = (np.stack([xs, xs, xs + 28, xs + 28], -1) / np.float32(S)).astype(np.float32)  # equal up to rounding
    assert "by_size" not in report(np.zeros(48), np.zeros(48), shifted, shifted, canvas_size=S)


def test_comparison_table_and_notebook_metrics(tmp_path):
    import json

    from mnist_loc.artifacts import notebook_metrics
    from mnist_loc.localization import comparison_table

    table = comparison_table({
        "a": {"accuracy": 0.99, "mean_iou": 0.9, "median_iou": 0.91, "iou_at_50": 1.0, "iou_at_75": 0.875},
        "b": {"accuracy": 0.5, "mean_iou": 0.25, "median_iou": 0.2, "iou_at_50": 0.1, "iou_at_75": 0.0,
              "by_size": {"small": {"mean_iou": 0.125}, "medium": {"mean_iou": None}, "large": {"mean_iou": 0.5}}},
    }).splitlines()
    assert table[0].startswith("|  | accuracy | mean IoU | median IoU | IoU ≥ 0.5 | IoU ≥ 0.75 | mean IoU, small")
    assert table[2] == "| a | 0.9900 | 0.9000 | 0.9100 | 100.00% | 87.50% | – | – | – |"
    assert table[3] == "| b | 0.5000 | 0.2500 | 0.2000 | 10.00% | 0.00% | 0.1250 | – | 0.5000 |"
    nb = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream", "text": ["x\n", 'METRICS {"accuracy": 0.99}\n']}]}]}
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    assert notebook_metrics(tmp_path / "n.ipynb") == {"accuracy": 0.99}
    (tmp_path / "empty.ipynb").write_text(json.dumps({"cells": []}))
    with pytest.raises(ValueError, match="no 'METRICS"):
        notebook_metrics(tmp_path / "empty.ipynb")


def _canvases_at(corners):
    """Synthetic digits (ink in every pixel) pasted with their top-left at ``corners`` (x, y)."""
    digits, _ = synthetic_digits(len(corners))
    canvases = np.zeros((len(corners), S, S, 1), np.float32)
    for canvas, digit, (x, y) in zip(canvases, digits, corners):
        canvas[y:y + 28, x:x + 28] = digit / 255.0
    return canvases


def test_test_time_augmentation_undoes_its_shifts():
    # The oracle's box follows the ink; away from the edges every shifted view, shifted back,
    # gives the same box: a sign error in a view or its offset would move it by 4 px.
    corners = [(2, 2), (10, 40), (45, 3), (30, 30), (45, 45)]
    canvases = _canvases_at(corners)
    plain, averaged = predict(oracle(), canvases), predict(oracle(), canvases, tta=True)
    expected = np.array([[x, y, x + 28, y + 28] for x, y in corners], np.float32) / S
    np.testing.assert_allclose(plain["boxes"], expected, atol=1e-6)
    np.testing.assert_allclose(averaged["boxes"], expected, atol=1e-6)
    np.testing.assert_array_equal(averaged["labels"], 3)


def test_test_time_augmentation_is_the_mean_over_shifted_views():
    from mnist_loc.inference import TTA_DESCRIPTION, TTA_SHIFTS
    from mnist_loc.localization import predict_dataset
    from mnist_loc.model import build_model

    keras.utils.set_random_seed(0)
    model = build_model()
    canvases = _canvases_at([(0, 0), (47, 47), (20, 5), (3, 40)])  # edges included: ink shifted off is lost
    probabilities, boxes = 0, 0
    for dx, dy in TTA_SHIFTS:  # by hand, in numpy: zero-filled shifts
        view = np.zeros_like(canvases)
        view[:, max(dy, 0):S + min(dy, 0), max(dx, 0):S + min(dx, 0)] = canvases[:, max(-dy, 0):S + min(-dy, 0), max(-dx, 0):S + min(-dx, 0)]
        out = model.predict(view, verbose=0)
        probabilities = probabilities + out["classification"] / len(TTA_SHIFTS)
        boxes = boxes + (out["bounding_box"] - np.array([dx, dy, dx, dy]) / S) / len(TTA_SHIFTS)
    averaged = predict(model, canvases, tta=True)
    np.testing.assert_allclose(averaged["probabilities"], probabilities, atol=1e-5)
    np.testing.assert_allclose(averaged["boxes"], boxes, atol=1e-5)
    assert not np.allclose(predict(model, canvases)["boxes"], boxes, atol=1e-3)  # the views do differ
    labels = np.eye(10, dtype=np.float32)[[1, 2, 3, 4]]
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((canvases, {"classification": labels, "bounding_box": boxes.astype(np.float32)})).batch(3)
    np.testing.assert_allclose(predict_dataset(model, ds, tta=True)["boxes"], boxes, atol=1e-5)
    result = evaluate(model, ds, tta=True)
    assert result["tta"] == TTA_DESCRIPTION
    assert evaluate(model, ds)["tta"] is None


def test_one_graph_function_per_model_and_the_model_is_not_kept_alive():
    import gc
    import weakref

    from mnist_loc.inference import forward as _forward

    model = build_model(canvas_size=28)
    images = np.zeros((3, 28, 28, 1), np.float32)
    for _ in range(7):  # a fresh tf.function per call would be traced 7 times (TF warns after 5)
        predict(model, images)
        predict(model, images, tta=True)
    assert _forward(model, False) is _forward(model, False) and _forward(model, True) is _forward(model, True)
    assert _forward(model, False).experimental_get_tracing_count() == 1
    assert _forward(model, True).experimental_get_tracing_count() == 1
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None, "the cache must not keep a model alive"


def test_both_kinds_answer_by_the_same_names_and_arguments():
    import inspect

    from mnist_loc.evaluation import KINDS, kind_of
    from mnist_loc.task import TASKS

    functions = ("default_model", "check_outputs", "compile", "training_targets", "calibrate", "predict", "evaluate",
                 "format_report", "picture", "print_predictions", "draw_predictions")
    localization, detection = KINDS["localization"], KINDS["detection"]
    for name in functions:
        assert list(inspect.signature(getattr(localization, name)).parameters) == list(inspect.signature(getattr(detection, name)).parameters), name
    for name in ("MODEL_NAME", "HEADLINE", "COLUMNS"):
        assert hasattr(localization, name) and hasattr(detection, name)
    assert kind_of(TASKS["course"]) is localization and kind_of(TASKS["multi-mnist"]) is detection
