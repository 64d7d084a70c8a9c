"""Dense scenes by generate_data.py's rules (task "mnist-detection"; placement.place_dense, draw_dense_scenes)."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from mnist_loc.boxes import iou
from mnist_loc.data import Digits, canvases_at, make_dataset
from mnist_loc.placement import MAX_PLACEMENTS, linear_weights, place_dense
from mnist_loc.task import TASKS, Task

DENSE = TASKS["mnist-detection"]
SMALL = DENSE.replace(canvases=(64, 200, 200))  # the same rules, fewer canvases


def solid_digits(value=255, n=20):
    """Solid 28x28 squares: a pasted digit is its whole square, so its ink box is its patch."""
    images = np.full((n, 28, 28, 1), value, np.uint8)
    labels = np.arange(n) % 10
    return Digits.from_arrays((images, labels), (images, labels), (images, labels))


def test_the_task_is_generate_data_py():
    assert (DENSE.canvas_size, DENSE.count, DENSE.box, DENSE.canvases) == (300, (1, 20), "ink", (10_000, 1_000, 1_000))
    assert DENSE.kind == "detection" and DENSE.max_count == 20 and Task.from_dict(DENSE.to_dict()) == DENSE
    with pytest.raises(ValueError, match="canvas_size must be > 99"):
        DENSE.replace(canvas_size=99)
    with pytest.raises(ValueError, match="box='ink', clutter=0"):
        DENSE.replace(box="patch")


def test_bilinear_weights_are_opencvs_by_hand():
    # 28 -> 56 px (stretch 0.5): canvas pixel u samples the digit at (u + 0.5) / 2 - 0.5, clamped to 0 .. 27.
    w = linear_weights(tf.constant([3]), tf.constant([56]), 64).numpy()[0]  # [28, 64], patch starts at column 3
    assert np.all(w[:, :3] == 0) and np.all(w[:, 59:] == 0)
    np.testing.assert_allclose(w[:, 3][:2], [1.0, 0.0])  # u = 0: -0.25, clamped to pixel 0
    np.testing.assert_allclose(w[:, 4][:2], [0.75, 0.25])  # u = 1: 0.25
    np.testing.assert_allclose(w[:, 5][:2], [0.25, 0.75])  # u = 2: 0.75
    np.testing.assert_allclose(w[26:, 58], [0.0, 1.0])  # u = 55: 27.25, clamped to pixel 27
    np.testing.assert_allclose(w[:, 3:59].sum(0), 1.0, rtol=1e-6)  # a constant digit stays constant
    # Shrinking 28 -> 14 samples between pixel pairs: no antialiasing, as INTER_LINEAR.
    w = linear_weights(tf.constant([0]), tf.constant([14]), 28).numpy()[0]
    np.testing.assert_allclose(w[:2, 0], [0.5, 0.5])
    np.testing.assert_allclose(w[26:, 13], [0.5, 0.5])


def test_a_place_overlapping_an_earlier_box_at_iou_025_or_more_is_drawn_again():
    # One canvas of S = 128 (every coordinate exact in float32), two slots, three candidates each.
    s = 128
    sides = np.array([[[32, 32, 32], [16, 16, 16]]], np.int32)
    offsets = np.array([[[[16, 16], [0, 0], [0, 0]],
                         # slot 1: inside slot 0's box, IoU 256 / 1024 = 0.25 exactly: not below, drawn again;
                         # then [40, 16, 56, 32]: 8 x 16 = 128 px shared, IoU 128 / 1152 = 0.111: taken.
                         [[24, 24], [40, 16], [100, 100]]]], np.int32)

    def boxes_of(slot, side, offset):
        xy = tf.cast(offset, tf.float32) / s
        return tf.concat([xy, xy + tf.cast(side, tf.float32)[:, None] / s], -1)

    chosen_sides, chosen, boxes = place_dense(tf.constant(sides), tf.constant(offsets), boxes_of, tf.constant([[True, True]]), s)
    np.testing.assert_array_equal(chosen.numpy()[0], [[16, 16], [40, 16]])
    np.testing.assert_array_equal(chosen_sides.numpy()[0], [32, 16])
    np.testing.assert_allclose(boxes.numpy()[0] * s, [[16, 16, 48, 48], [40, 16, 56, 32]])


def test_the_earlier_digits_tight_box_counts_not_its_square():
    s = 100
    sides = np.array([[[60], [30]]], np.int32)
    offsets = np.array([[[[0, 0]], [[10, 10]]]], np.int32)  # slot 1's square lies inside slot 0's square
    thin = tf.constant([[0.45, 0.0, 0.55, 0.60]])  # but slot 0's ink is a thin bar: IoU 0.05 with [0.1, 0.1, 0.4, 0.4]
    boxes_of = lambda slot, side, offset: thin if slot == 0 else tf.constant([[0.1, 0.1, 0.4, 0.4]])  # noqa: E731
    _, chosen, _ = place_dense(tf.constant(sides), tf.constant(offsets), boxes_of, tf.constant([[True, True]]), s)
    np.testing.assert_array_equal(chosen.numpy()[0, 1], [10, 10])


def test_a_digit_with_no_free_place_fails_clearly_and_an_absent_one_does_not():
    s = 100
    sides = np.full([1, 2, MAX_PLACEMENTS], 50, np.int32)
    offsets = np.zeros([1, 2, MAX_PLACEMENTS, 2], np.int32)  # every candidate on top of slot 0
    boxes_of = lambda slot, side, offset: tf.constant([[0.0, 0.0, 0.5, 0.5]])  # noqa: E731
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"digit 2 of a dense scene found no place .* in {MAX_PLACEMENTS} tries"):
        place_dense(tf.constant(sides), tf.constant(offsets), boxes_of, tf.constant([[True, True]]), s)
    _, _, boxes = place_dense(tf.constant(sides), tf.constant(offsets), boxes_of, tf.constant([[True, False]]), s)
    np.testing.assert_array_equal(boxes.numpy()[0, 1], 0)


@pytest.fixture(scope="module")
def faint_scenes():
    """200 validation canvases of faint solid squares (100 / 255): one digit's pixels are 0.392,
    two overlapping 0.784, three or more clipped at 1."""
    return canvases_at("validation", np.arange(200), digits=solid_digits(100), task=SMALL)


def test_pixels_are_added_then_clipped(faint_scenes):
    images, labels, boxes = faint_scenes
    v = np.float32(100 / 255)
    grid = (np.arange(300) + 0.5) / 300
    for image, found, box in zip(images[:40], labels, boxes):
        inside = [(grid[None, :] > b[0]) & (grid[None, :] < b[2]) & (grid[:, None] > b[1]) & (grid[:, None] < b[3])
                  for b in box[found >= 0]]
        layers = np.sum(inside, axis=0)
        np.testing.assert_allclose(image[..., 0], np.minimum(layers * v, 1.0), atol=1e-5)
    assert np.isclose(images, 2 * v, atol=1e-5).any() and (images == 1.0).any(), "both sums and clipped sums occur"


def test_sides_reach_15_and_99_counts_1_and_20_and_squares_keep_to_the_canvas(faint_scenes):
    _, labels, boxes = faint_scenes
    present = labels >= 0
    counts = present.sum(1)
    assert counts.min() == 1 and counts.max() == 20
    assert np.all(present[:, :-1] >= present[:, 1:]), "digits fill the first slots"
    pixels = np.round(boxes[present] * 300).astype(int)
    sides = pixels[:, 2] - pixels[:, 0]
    assert np.array_equal(sides, pixels[:, 3] - pixels[:, 1]) and sides.min() == 15 and sides.max() == 99
    assert pixels[:, :2].min() == 0 and pixels[:, 2:].max() == 299, "corners 0 .. 300 - side - 1"


def test_every_digit_overlaps_the_earlier_ones_below_iou_025(faint_scenes):
    _, labels, boxes = faint_scenes
    for found, box in zip(labels, boxes):
        box = box[found >= 0]
        for k in range(1, len(box)):
            assert iou(np.repeat(box[k:k + 1], k, 0), box[:k]).max() < 0.25


def test_a_dense_canvas_is_a_pure_function_of_its_index(mnist_digits):
    digits = Digits.from_arrays(*(mnist_digits.split(s) for s in ("train", "validation", "test")))
    whole = [(x.numpy(), y["labels"].numpy(), y["boxes"].numpy()) for x, y in make_dataset("test", digits, task=SMALL, batch_size=25).take(2)]
    x, labels, boxes = (np.concatenate(p) for p in zip(*whole))
    for got, want in zip(canvases_at("test", [37, 2], digits=digits, task=SMALL), (x, labels, boxes)):
        np.testing.assert_array_equal(got, want[[37, 2]])
    ink = boxes[labels >= 0]
    assert np.all(ink[:, 2:] - ink[:, :2] <= 99 / 300 + 1e-6) and np.all(ink[:, 2:] > ink[:, :2]), "tight boxes within the square"


DENSE_GOLDEN = "0b49251d7acd87faf057fff9655931cbf0350879ab30353cd9a71aee72c00725"  # first 100 mnist-detection test canvases + targets, seed 0


def test_dense_test_canvases_are_pinned(mnist_digits):
    h = hashlib.sha256()
    for x, y in make_dataset("test", mnist_digits, task=DENSE, batch_size=50).take(2):
        for array in (x, y["labels"], y["boxes"]):
            h.update(array.numpy().tobytes())
    assert h.hexdigest() == DENSE_GOLDEN
