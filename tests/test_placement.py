"""How one canvas is drawn: placement, resizing, boxes and clutter, against hand-made and numpy references."""

import numpy as np
import pytest
import tensorflow as tf

from mnist_loc.placement import INK_THRESHOLD, _add_clutter, draw_layout, place_digits, random_offsets
from mnist_loc.task import TASKS, Task
from conftest import synthetic_digits

S = 75


def test_box_formula_and_digit_pixels_exactly_inside_box():
    images, _ = synthetic_digits(3)
    offsets = np.array([[0, 0], [47, 47], [10, 31]], np.int32)  # (x, y)
    canvases, boxes = place_digits(images, offsets, S)
    canvases, boxes = canvases.numpy()[..., 0], boxes.numpy()
    for k, (x, y) in enumerate(offsets):
        np.testing.assert_allclose(boxes[k], np.array([x, y, x + 28, y + 28]) / S, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(canvases[k, y : y + 28, x : x + 28], images[k, ..., 0].astype(np.float32) / 255.0)
        outside = canvases[k].copy()
        outside[y : y + 28, x : x + 28] = 0
        assert not outside.any(), "canvas must be black outside the digit's box"


@pytest.mark.parametrize("size", [28, 29, 75, 100])
def test_placement_equals_numpy_slicing_bit_for_bit(size):
    rng = np.random.default_rng(size)
    digits = rng.integers(0, 256, size=(32, 28, 28, 1), dtype=np.uint8)
    offsets = rng.integers(0, size - 28 + 1, size=(32, 2)).astype(np.int32)  # (x, y)
    expected = np.zeros((32, size, size, 1), np.float32)
    for k, (x, y) in enumerate(offsets):
        expected[k, y : y + 28, x : x + 28] = digits[k].astype(np.float32) / np.float32(255.0)
    canvases, _ = place_digits(digits, offsets, size)
    assert canvases.dtype == tf.float32
    assert canvases.numpy().tobytes() == expected.tobytes()


def test_offsets_reach_both_ends_and_stay_in_range():
    offsets = random_offsets(20000, S, tf.constant([0, 1], tf.int64)).numpy()
    assert offsets.min() == 0 and offsets.max() == S - 28
    assert set(np.unique(offsets)) == set(range(S - 28 + 1))


def test_offset_outside_canvas_is_refused():
    images, _ = synthetic_digits(1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the canvas"):
        place_digits(images, [[S - 27, 0]], S)


def test_negative_offset_is_refused():
    images, _ = synthetic_digits(1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be >= 0"):
        place_digits(images, [[3, -1]], S)


def area_resample(digit, s):
    """Independent reference: split every digit pixel into s x s sub-pixels, average 28 x 28 blocks."""
    fine = np.kron(digit.astype(np.float64) / 255.0, np.ones((s, s)))  # [28 s, 28 s]
    return fine.reshape(s, 28, s, 28).mean(axis=(1, 3))


@pytest.mark.parametrize("s", [7, 14, 19, 28, 37, 56, 75])
def test_resized_placement_matches_area_resampling(s):
    images, _ = synthetic_digits(3, seed=s)
    offsets = np.array([[0, 0], [75 - s, 75 - s], [(75 - s) // 3, (75 - s) // 2]], np.int32)
    canvases, boxes = place_digits(images, offsets, S, sizes=[s, s, s])
    canvases = canvases.numpy()[..., 0]
    for k, (x, y) in enumerate(offsets):
        # float32 weights such as 28/37 round: 1e-5 is a fortieth of one gray level
        np.testing.assert_allclose(canvases[k, y : y + s, x : x + s], area_resample(images[k, ..., 0], s), atol=1e-5)
        outside = canvases[k].copy()
        outside[y : y + s, x : x + s] = 0
        assert not outside.any()
        np.testing.assert_allclose(boxes.numpy()[k], np.array([x, y, x + s, y + s]) / S, atol=1e-7)


def numpy_ink_box(canvas, threshold=INK_THRESHOLD):
    ys, xs = np.nonzero(canvas >= threshold)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def test_ink_boxes_match_a_numpy_reference_on_resized_digits():
    rng = np.random.default_rng(0)
    digits = np.zeros((40, 28, 28, 1), np.uint8)
    for k in range(40):  # a random blob of ink plus faint noise below the threshold
        y0, x0 = rng.integers(0, 20, 2)
        h, w = rng.integers(1, 9, 2)
        digits[k, y0 : y0 + h, x0 : x0 + w] = rng.integers(30, 256)
        digits[k] = np.maximum(digits[k], rng.integers(0, 20, (28, 28, 1)).astype(np.uint8))
    sizes = rng.integers(7, 75, 40).astype(np.int32)
    offsets = np.stack([rng.integers(0, 75 - sizes + 1), rng.integers(0, 75 - sizes + 1)], -1).astype(np.int32)
    canvases, boxes = place_digits(digits, offsets, S, sizes=sizes, box="ink")
    canvases = canvases.numpy()[..., 0]
    for k in range(40):
        if (canvases[k] >= INK_THRESHOLD).any():
            np.testing.assert_allclose(boxes.numpy()[k] * S, numpy_ink_box(canvases[k]), atol=1e-4)
        else:  # no pixel reaches the threshold: the patch box
            np.testing.assert_allclose(boxes.numpy()[k] * S, [*offsets[k], *(offsets[k] + sizes[k])], atol=1e-4)


def test_ink_box_of_a_thin_stroke_is_tight():
    digit = np.zeros((1, 28, 28, 1), np.uint8)
    digit[0, 4:24, 13:15] = 255  # a "1": 2 px wide, 20 px tall
    _, box = place_digits(digit, [[10, 20]], S, box="ink")
    np.testing.assert_allclose(box.numpy()[0] * S, [23, 24, 25, 44], atol=1e-4)


def test_scale_draw_is_log_uniform_and_every_digit_fits():
    layout = draw_layout(20000, tf.constant([0, 1], tf.int64), Task(scale=(0.5, 2.0)))
    sizes, offsets = layout["sizes"].numpy(), layout["offsets"].numpy()
    assert sizes.min() == 14 and sizes.max() == 56
    assert (offsets >= 0).all() and (offsets + sizes[:, None] <= S).all()
    assert abs(np.median(np.log(sizes / 28))) < 0.03, "log-uniform on [1/2, 2] has median factor 1"
    small, large = (sizes <= 19).mean(), (sizes >= 41).mean()  # each ~log(1.4)/log(4) = 24%
    assert 0.2 < small < 0.3 and 0.2 < large < 0.3
    big = offsets[sizes == 56]
    assert big.min() == 0 and big.max() == S - 56, "offsets reach both ends of the room left"


def test_clutter_fragments_come_from_other_digits():
    layout = draw_layout(50, tf.constant([0, 5], tf.int64), Task(clutter=6))
    sources = layout["sources"].numpy()
    assert sources.shape == (50, 6) and sources.min() >= 0 and sources.max() < 50
    assert not (sources == np.arange(50)[:, None]).any()
    assert (layout["positions"].numpy() <= S - 8).all() and (layout["crops"].numpy() <= 20).all()


def test_clutter_fragment_is_the_crop_pasted_where_drawn_and_cut_at_the_patch():

    rng = np.random.default_rng(3)
    source = rng.integers(0, 256, (1, 2, 28, 28), dtype=np.uint8)
    target = np.zeros((1, S, S, 1), np.float32)
    target[0, 40:68, 40:68, 0] = 0.5  # a 28 px patch at (40, 40)
    crops = np.array([[[3, 5], [20, 0]]], np.int32)  # (x, y) in the source digits
    positions = np.array([[[2, 10], [36, 36]]], np.int32)  # the second overlaps the patch
    out = _add_clutter(tf.constant(target), tf.constant([[40, 40]]), tf.constant([28]), tf.constant(source), tf.constant(crops), tf.constant(positions), S).numpy()[0, ..., 0]
    expected = target[0, ..., 0].copy()
    expected[10:18, 2:10] = source[0, 0, 5:13, 3:11] / 255.0
    second = np.zeros((S, S), np.float32)
    second[36:44, 36:44] = source[0, 1, 0:8, 20:28] / 255.0
    second[40:68, 40:68] = 0  # cut off at the target's patch
    np.testing.assert_allclose(out, np.clip(expected + second, 0, 1), atol=1e-7)


def test_a_distractor_over_the_target_adds_and_clips():

    size = 60
    target_digit = np.zeros((1, 28, 28, 1), np.uint8)
    target_digit[0, 10:14, 10:14] = 200
    target, _ = place_digits(target_digit, [[5, 7]], size)  # target pixels at rows 17..20, columns 15..18
    source = np.zeros((1, 2, 28, 28), np.uint8)
    source[0, 0, 0:8, 0:8] = 100  # first piece: 100 everywhere in its crop at (0, 0)
    source[0, 1, 20:28, 20:28] = 60  # second piece: 60, cropped at the far corner (20, 20)
    crops = np.array([[[0, 0], [20, 20]]], np.int32)
    positions = np.array([[[14, 16], [16, 18]]], np.int32)  # both over the target, overlapping each other
    args = (tf.constant([[5, 7]]), tf.constant([28]), tf.constant(source), tf.constant(crops), tf.constant(positions), size, 8)
    out = _add_clutter(target, *args, overlap=True).numpy()[0, ..., 0]
    # By hand, in gray levels: target 200, pieces 100 and 60.
    assert out[16, 14] == pytest.approx(100 / 255)  # first piece alone
    assert out[24, 22] == pytest.approx(60 / 255)  # second piece alone
    assert out[19, 17] == pytest.approx(1.0)  # target 200 + 100 + 60 = 360 clips at 255
    assert out[17, 15] == pytest.approx(1.0)  # target 200 + first 100 = 300 clips
    assert out[22, 19] == pytest.approx(160 / 255)  # both pieces, no target: 100 + 60
    assert out[0, 0] == 0.0
    cut = _add_clutter(target, *args, overlap=False).numpy()[0, ..., 0]
    assert cut[19, 17] == pytest.approx(200 / 255), "mnist_loc's own rule keeps the target's patch clear"


def test_distractors_sum_clips_at_one_before_the_target_is_added():

    source = np.full((1, 2, 28, 28), 200, np.uint8)
    positions = np.array([[[0, 0], [0, 0]]], np.int32)
    target = np.zeros((1, 28, 28, 1), np.float32)
    out = _add_clutter(tf.constant(target), tf.constant([[0, 0]]), tf.constant([28]), tf.constant(source),
                       tf.zeros((1, 2, 2), tf.int32), tf.constant(positions), 28, 8, overlap=True).numpy()
    assert out.max() == 1.0 and out[0, 8:, 8:].max() == 0.0


def test_literature_layout_offsets_reach_both_ends_and_sources_repeat():
    for name in ("translated-60", "cluttered-60", "cluttered-100"):
        task = TASKS[name]
        layout = draw_layout(20000, tf.constant([0, 9], tf.int64), task)
        offsets = layout["offsets"].numpy()
        assert offsets.min() == 0 and offsets.max() == task.canvas_size - 28
        assert set(np.unique(offsets)) == set(range(task.canvas_size - 28 + 1))
        if task.clutter:
            crops, positions, sources = (layout[k].numpy() for k in ("crops", "positions", "sources"))
            assert crops.min() == 0 and crops.max() == 20
            assert positions.min() == 0 and positions.max() == task.canvas_size - 8
            assert sources.min() == 0 and sources.max() == 19999
            assert (sources == np.arange(20000)[:, None]).any(), "drawn with replacement: a piece may come from the target's own digit"
