"""Property tests: IoU's invariances and the placement's guarantees for any inputs."""

import numpy as np
import tensorflow as tf
from hypothesis import given, settings, strategies as st

from mnist_loc.boxes import iou
from mnist_loc.data import Digits, make_dataset
from mnist_loc.placement import place_digits, random_offsets, stream_key
from mnist_loc.task import Task

coord = st.floats(min_value=-100, max_value=100, allow_nan=False, width=64)
size = st.floats(min_value=0.01, max_value=50, allow_nan=False, width=64)


@st.composite
def boxes(draw):
    x, y, w, h = draw(coord), draw(coord), draw(size), draw(size)
    return np.array([x, y, x + w, y + h])


@st.composite
def any_boxes(draw):  # may be degenerate or inverted
    return np.array([draw(coord) for _ in range(4)])


@given(any_boxes(), any_boxes())
def test_symmetric_and_in_unit_interval(a, b):
    value = iou(a, b)
    assert 0.0 <= value <= 1.0
    assert value == iou(b, a)


@given(boxes())
def test_identical_positive_area_boxes_score_one(a):
    assert abs(iou(a, a) - 1.0) < 1e-12


@given(boxes(), boxes(), coord, coord)
def test_translation_invariant(a, b, dx, dy):
    shift = np.array([dx, dy, dx, dy])
    assert abs(iou(a + shift, b + shift) - iou(a, b)) < 1e-6


@given(boxes(), boxes(), st.floats(min_value=0.05, max_value=20))
def test_scale_invariant(a, b, scale):
    assert abs(iou(a * scale, b * scale) - iou(a, b)) < 1e-6


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    canvas_size=st.integers(28, 120),
    index=st.integers(0, 7),
    pass_index=st.integers(0, 1000),
)
def test_placement_keeps_ink_inside_box(seed, canvas_size, index, pass_index):
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 256, size=(8, 28, 28, 1), dtype=np.uint8)
    offsets = tf.gather(random_offsets(8, canvas_size, stream_key(seed, 1, pass_index)), [index])
    canvases, box = place_digits(digits[index : index + 1], offsets, canvas_size)
    canvas, box = canvases.numpy()[0, ..., 0], box.numpy()[0]
    assert abs(canvas.sum() - digits[index].astype(np.float32).sum() / 255.0) < 1e-3
    xmin, ymin, xmax, ymax = np.round(box * canvas_size).astype(int)
    assert 0 <= xmin and xmax <= canvas_size and 0 <= ymin and ymax <= canvas_size
    assert xmax - xmin == 28 and ymax - ymin == 28
    outside = canvas.copy()
    outside[ymin:ymax, xmin:xmax] = 0
    assert not outside.any()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), canvas_size=st.integers(28, 90))
def test_dataset_pixel_sums_match_digits(seed, canvas_size):
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 256, size=(6, 28, 28, 1), dtype=np.uint8)
    split = (digits, np.arange(6))
    ds = make_dataset("test", Digits.from_arrays(split, split, split), task=Task(canvas_size=canvas_size), batch_size=6, seed=seed)
    images, targets = next(iter(ds))
    np.testing.assert_allclose(images.numpy().sum(axis=(1, 2, 3)), digits.astype(np.float32).sum(axis=(1, 2, 3)) / 255.0, rtol=1e-5)
