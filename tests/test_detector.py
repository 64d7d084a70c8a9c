"""The detector: its outputs, targets, loss and decoding on hand-made canvases whose answer is known."""

import keras
import numpy as np
import pytest

from mnist_loc.artifacts import load_model, save_model
from mnist_loc.detector import (
    STRIDE, DetectionLoss, build_detector, count_threshold, decode, grid_stride, heatmap_targets, nms_window, pack_targets,
    saved_defaults, set_count_threshold,
)

S, C = 50, 10  # a 50 px canvas: a 25 x 25 grid of 2 px cells
GRID = S // STRIDE


def targets(*digits, k=2):
    """Packed targets [1, K, 5] of (label, box in pixels) pairs."""
    labels = np.full((1, k), -1, np.float32)
    boxes = np.zeros((1, k, 4), np.float32)
    for i, (label, box) in enumerate(digits):
        labels[0, i], boxes[0, i] = label, np.asarray(box, np.float32) / S
    return np.asarray(pack_targets(labels, boxes))


def ideal_outputs(packed):
    """The outputs a perfect detector gives: logit +12 at each digit's centre cell (its class),
    -12 elsewhere, and at every cell the distances to the box of the digit owning it."""
    heat, centres, owner_boxes, _ = (np.asarray(t) for t in heatmap_targets(packed, GRID, GRID, C, S))
    logits = np.where(centres > 0, 12.0, -12.0)
    centre = (np.arange(GRID) + 0.5) * STRIDE / S
    cx, cy = centre[None, None, :], centre[None, :, None]
    distances = np.stack([cx - owner_boxes[..., 0], cy - owner_boxes[..., 1], owner_boxes[..., 2] - cx, owner_boxes[..., 3] - cy], -1)
    return np.concatenate([logits, distances], -1).astype(np.float32)


FAR_APART = ((3, (2, 4, 16, 24)), (7, (30, 20, 44, 46)))
TOUCHING = ((1, (10, 10, 20, 30)), (1, (20, 12, 31, 32)))  # same class, boxes share the edge x = 20 px


def test_outputs_have_the_contract_shape_at_any_canvas_size():
    for size, grid, k in ((50, 25, 2), (75, 38, 1)):
        outputs = build_detector(size, C, max_count=k)(np.zeros((2, size, size, 1), np.float32))
        assert tuple(outputs["detections"].shape) == (2, grid, grid, C + 4)
        assert tuple(outputs["count"].shape) == (2, k + 1) and np.allclose(np.sum(outputs["count"], -1), 1, atol=1e-5)
    assert set(build_detector(S, C, max_count=None)(np.zeros((1, S, S, 1), np.float32))) == {"detections"}


def test_the_wide_detector_answers_on_a_stride_4_grid():
    model = build_detector(300, C, max_count=20, stride=4, dilations=(1, 2, 4, 8, 1))
    outputs = model(np.zeros((1, 300, 300, 1), np.float32))
    assert tuple(outputs["detections"].shape) == (1, 75, 75, C + 4) and tuple(outputs["count"].shape) == (1, 21)
    assert [grid_stride(300, g) for g in (150, 75, 38, 74)] == [2, 4, 8, None] and grid_stride(75, 38) == 2
    assert [nms_window(s) for s in (1, 2, 4, 8)] == [11, 5, 3, 3], "about 10 px, an odd number of cells"
    with pytest.raises(ValueError, match="stride must be 2 or 4"):
        build_detector(300, C, stride=3)


@pytest.mark.parametrize("shape, seen", [({"dilations": (1, 2, 4, 8, 1)}, 135), ({"pyramid": True}, 183)], ids=["wide", "pyramid"])
def test_a_stride_4_cell_sees_the_pixels_its_docstring_says(shape, seen):
    """The receptive field of the grid's middle cell, measured: the input pixels its outputs depend on."""
    import tensorflow as tf

    model = build_detector(300, C, max_count=None, stride=4, **shape)
    canvas = tf.Variable(np.random.default_rng(0).random((1, 300, 300, 1), np.float32))
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(model(canvas)["detections"][0, 37, 37])
    used = np.abs(tape.gradient(out, canvas).numpy()[0, ..., 0]) > 0
    rows, columns = np.nonzero(used.any(1))[0], np.nonzero(used.any(0))[0]
    assert rows.max() - rows.min() + 1 == seen and columns.max() - columns.min() + 1 == seen
    assert used[rows.min():rows.max() + 1, columns.min():columns.max() + 1].all(), "no gaps between dilated taps"


def test_the_pyramid_answers_on_the_grid_of_its_stride_at_any_canvas_size():
    for size, stride, grid in ((50, 2, 25), (300, 4, 75), (97, 4, 25), (75, 2, 38)):
        outputs = build_detector(size, C, max_count=20, stride=stride, pyramid=True)(np.zeros((1, size, size, 1), np.float32))
        assert tuple(outputs["detections"].shape) == (1, grid, grid, C + 4) and tuple(outputs["count"].shape) == (1, 21)


def test_decoding_a_perfect_stride_4_output_gives_back_every_digit():
    size, grid = 300, 75  # 4 px cells
    digits = ((2, (10, 12, 25, 40)), (5, (100, 100, 199, 190)), (5, (120, 130, 135, 160)))  # a small 5 inside a large one's box
    labels = np.array([[d[0] for d in digits]], np.float32)
    boxes = np.array([[d[1] for d in digits]], np.float32) / size
    packed = np.asarray(pack_targets(labels, boxes))
    _, centres, owner_boxes, _ = (np.array(t) for t in heatmap_targets(packed, grid, grid, C, size))
    assert centres.sum() == 3 and centres[0, 26 // 4, 17 // 4, 2] == 1  # centre (17.5, 26) px -> cell (4, 6)
    owner_boxes[0, 145 // 4, 127 // 4] = boxes[0, 2]  # the small digit owns its own centre cell
    centre = (np.arange(grid) + 0.5) * 4 / size
    cx, cy = centre[None, None, :], centre[None, :, None]
    distances = np.stack([cx - owner_boxes[..., 0], cy - owner_boxes[..., 1], owner_boxes[..., 2] - cx, owner_boxes[..., 3] - cy], -1)
    found = decode(np.concatenate([np.where(centres > 0, 12.0, -12.0), distances], -1).astype(np.float32), size, 100)
    assert found["boxes"].shape == (1, 100, 4) and (found["scores"][0, :3] > 0.99).all() and (found["scores"][0, 3:] < 1e-4).all()
    got = sorted((int(label), tuple(np.round(box * size, 2))) for label, box in zip(found["labels"][0, :3], found["boxes"][0, :3]))
    assert got == sorted((label, tuple(float(v) for v in box)) for label, box in digits)


def test_heatmap_targets_put_one_at_each_centre_cell_by_hand():
    heat, centres, owner_boxes, weight = (np.asarray(t) for t in heatmap_targets(targets(*FAR_APART), GRID, GRID, C, S))
    # Digit 3: box centre (9, 14) px -> cell (column 4, row 7); digit 7: (37, 33) px -> cell (18, 16).
    assert centres.sum() == 2 and centres[0, 7, 4, 3] == 1 and centres[0, 16, 18, 7] == 1
    assert heat[0, 7, 4, 3] == 1 and heat[0, 16, 18, 7] == 1 and heat[..., [0, 1, 2, 4, 5, 6, 8, 9]].max() == 0
    assert 0 < heat[0, 7, 5, 3] < 1 and heat[0, 7, 5, 3] == pytest.approx(np.exp(-(2 / 50) ** 2 / (2 * (0.09 * 14 / 50) ** 2)), rel=1e-5)
    np.testing.assert_allclose(owner_boxes[0, 7, 4], np.array(FAR_APART[0][1]) / S, rtol=1e-6)
    np.testing.assert_allclose(owner_boxes[0, 16, 18], np.array(FAR_APART[1][1]) / S, rtol=1e-6)
    assert weight[0, 7, 4] == 1 and weight[0, 0, 24] < 1e-6
    empty = [np.asarray(t) for t in heatmap_targets(targets(), GRID, GRID, C, S)]
    assert all(t.max() == 0 for t in (empty[0], empty[1], empty[3]))


@pytest.mark.parametrize("digits", [FAR_APART, TOUCHING, ()], ids=["far_apart", "touching", "none"])
def test_decoding_a_perfect_output_gives_back_every_digit(digits):
    found = decode(ideal_outputs(targets(*digits)), S)
    n = len(digits)
    assert found["boxes"].shape == (1, 10, 4) and found["labels"].shape == (1, 10)
    assert (found["scores"][0, :n] > 0.99).all() and (found["scores"][0, n:] < 1e-4).all()
    assert np.all(np.diff(found["scores"][0]) <= 0), "sorted, highest first"
    got = sorted((int(label), tuple(np.round(box * S, 3))) for label, box in zip(found["labels"][0, :n], found["boxes"][0, :n]))
    assert got == sorted((label, tuple(float(v) for v in box)) for label, box in digits)


def test_decoding_keeps_one_peak_per_place_whatever_its_class():
    out = np.full((1, GRID, GRID, C + 4), -12.0, np.float32)
    out[0, 5, 5, 2], out[0, 5, 6, 8] = 3.0, 2.0  # two classes fire on neighbouring cells: one digit
    out[0, 20, 20, 4] = 1.0  # a weak peak elsewhere
    out[0, 12, 12, 0], out[0, 12, 12, 6] = 0.5, 4.0  # two classes at one cell: the better one
    found = decode(out, S)
    assert found["labels"][0, :3].tolist() == [6, 2, 4] and found["scores"][0, 3] < 1e-4
    np.testing.assert_allclose(found["scores"][0, :3], 1 / (1 + np.exp(-np.array([4.0, 3.0, 1.0]))), rtol=1e-6)


def test_the_count_head_rescores_the_ranked_peaks_by_hand():
    out = np.full((1, GRID, GRID, C + 4), -12.0, np.float32)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    out[0, 3, 3, 1], out[0, 15, 15, 2], out[0, 20, 5, 3] = logit(0.9), logit(0.8), logit(0.3)
    # The count head: 0 digits 0.0, 1 digit 0.9, 2 digits 0.1 -> P(> 0) = 1, P(> 1) = 0.1, P(> 2) = 0.
    found = decode(out, S, count=np.array([[0.0, 0.9, 0.1]]))
    np.testing.assert_allclose(found["scores"][0, :3], [np.sqrt(0.9), np.sqrt(0.08), 0.0], rtol=1e-5, atol=1e-7)
    assert found["labels"][0, :2].tolist() == [1, 2]
    assert (found["scores"][0] >= 0.5).sum() == 1


def test_loss_is_lowest_for_the_right_answer_and_finite_without_digits():
    loss = DetectionLoss(S)
    for digits in (FAR_APART, TOUCHING):
        y = targets(*digits)
        right = float(loss(y, ideal_outputs(y)))
        missed = ideal_outputs(targets(digits[0]))  # the second digit unseen
        shifted = ideal_outputs(y)
        shifted[..., C:] += 2 / S  # every box 2 px too large on each side
        assert right < 1e-3 and float(loss(y, missed)) > 1.0 and float(loss(y, shifted)) > 0.05
    empty = targets()
    assert float(loss(empty, ideal_outputs(empty))) < 1e-3
    assert np.isfinite(float(loss(empty, np.zeros((1, GRID, GRID, C + 4), np.float32))))


def test_class_loss_is_the_bump_weighted_cross_entropy_by_hand():
    y = targets(FAR_APART[0])  # one digit of class 3, its centre cell (column 4, row 7)
    out = ideal_outputs(y)
    out[..., :C] = 0.0  # every class equally likely everywhere: cross-entropy log 10 at every cell
    out[0, 7, 4, :C] = np.where(np.arange(C) == 3, 2.0, 0.0)  # the centre cell leans to the right class
    heat_only, with_classes = DetectionLoss(S), DetectionLoss(S, class_weight=2.0)
    _, _, _, weight = (np.asarray(t) for t in heatmap_targets(y, GRID, GRID, C, S))
    centre_ce = -(2.0 - np.log(np.exp(2.0) + 9))
    ce = np.full((GRID, GRID), np.log(10.0))
    ce[7, 4] = centre_ce
    expected = 2.0 * (weight[0] * ce).sum() / weight[0].sum()  # one digit: no division by the count
    assert float(with_classes(y, out)) - float(heat_only(y, out)) == pytest.approx(expected, rel=1e-5)
    right = ideal_outputs(y)  # +12 at the centre for class 3, -12 for all else: ties off the centre
    assert float(with_classes(y, right)) - float(heat_only(y, right)) == pytest.approx(
        2.0 * (weight[0] * np.where(weight[0] == 1, 0.0, np.log(10.0))).sum() / weight[0].sum(), rel=1e-4, abs=1e-6)


def test_count_threshold_travels_in_the_keras_file(tmp_path):
    model = build_detector(S, C)
    assert count_threshold(model) == 0.5
    assert set_count_threshold(model, 0.37)
    save_model(model, tmp_path / "d.keras")
    loaded = load_model(tmp_path / "d.keras")
    assert count_threshold(loaded) == pytest.approx(0.37)
    x = np.random.default_rng(0).random((2, S, S, 1), np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x)["detections"]), np.asarray(model(x)["detections"]))


def test_saturated_neighbours_make_one_peak_not_two():
    # Logits 30 and 25 both give a sigmoid of exactly 1.0 in float32: peaks are found on logits.
    out = np.full((1, GRID, GRID, C + 4), -12.0, np.float32)
    out[..., C:] = 0.0  # every box a point at its cell's centre
    out[0, 5, 5, 2], out[0, 5, 6, 2] = 25.0, 30.0
    out[0, 15, 15, 7], out[0, 15, 16, 7] = 40.0, 40.0  # equal logits: the first in row-major order
    found = decode(out, S)
    assert (found["scores"][0] >= 0.5).sum() == 2 and found["labels"][0, :2].tolist() == [2, 7]
    centres = (found["boxes"][0, :2, :2] + found["boxes"][0, :2, 2:]) / 2 * S / STRIDE - 0.5  # zero distances: the cell
    assert sorted(map(tuple, np.round(centres).astype(int).tolist())) == [(6, 5), (15, 15)]


@pytest.mark.parametrize("stride", [4, 8, 16])
def test_every_stride_suppresses_a_peaks_neighbours(stride):
    assert nms_window(stride) >= 3
    size = 300
    grid = -(-size // stride)
    out = np.full((1, grid, grid, C + 4), -12.0, np.float32)
    out[0, 8, 8, 3], out[0, 8, 9, 3], out[0, 9, 9, 5] = 5.0, 4.0, 3.0  # one digit seen by three cells
    found = decode(out, size)
    assert (found["scores"][0] >= 0.5).sum() == 1 and found["labels"][0, 0] == 3


def test_a_detection_scored_zero_has_no_label_and_boxes_stay_on_the_canvas():
    out = np.full((1, GRID, GRID, C + 4), -12.0, np.float32)
    out[0, 3, 3, 1], out[0, 20, 20, 2] = 6.0, 5.0
    out[0, 3, 3, C:] = 0.5  # 25 px to each side of a cell 7 px from the corner: off the canvas
    found = decode(out, S, count=np.array([[0.0, 1.0, 0.0]]))  # exactly one digit: P(> 1) = 0
    assert found["scores"][0, 0] > 0.9 and found["labels"][0, 0] == 1
    assert np.all(found["labels"][0, 1:] == -1) and np.all(found["scores"][0, 1:] == 0)
    assert found["boxes"].min() >= 0.0 and found["boxes"].max() <= 1.0
    np.testing.assert_allclose(found["boxes"][0, 0], [0.0, 0.0, 3.5 * STRIDE / S + 0.5, 3.5 * STRIDE / S + 0.5], rtol=1e-6)


def test_threshold_and_cap_are_predicts_arguments_defaulting_to_the_saved_ones(tmp_path):
    from mnist_loc.evaluation import predict

    model = build_detector(S, C, max_count=3)
    assert saved_defaults(model) == (0.5, 15), "five detections per digit the model may count"
    set_count_threshold(model, 0.0)
    save_model(model, tmp_path / "d.keras")
    loaded = load_model(tmp_path / "d.keras")
    x = np.random.default_rng(0).random((2, S, S, 1), np.float32)
    every = predict(loaded, x)
    assert every["boxes"].shape == (2, 15, 4) and every["counts"].tolist() == (every["labels"] >= 0).sum(1).tolist()
    fewer = predict(loaded, x, threshold=1.0, max_detections=4)
    assert fewer["boxes"].shape == (2, 4, 4) and fewer["counts"].tolist() == [0, 0]
    with pytest.raises(ValueError, match="a detector's"):
        predict(keras.Model(*(lambda i: (i, {"classification": keras.layers.Dense(C, activation="softmax")(keras.layers.Flatten()(i)),
                                                "bounding_box": keras.layers.Dense(4)(keras.layers.Flatten()(i))}))(keras.Input((S, S, 1)))),
                x, threshold=0.3)


@pytest.mark.slow
def test_a_saved_detector_loads_as_the_first_call_of_a_new_process(tmp_path):
    import subprocess
    import sys

    save_model(build_detector(S, C), tmp_path / "d.keras")
    code = f"import mnist_loc; m = mnist_loc.load_model({str(tmp_path / 'd.keras')!r}); print(m.name)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "mnist_loc_detector"
