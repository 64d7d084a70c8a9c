"""Canvases of several digits by AIR's rules (placement.draw_scenes, data's detection streams)."""

import hashlib

import numpy as np
import pytest

from mnist_loc.data import Digits, canvases_at, make_dataset
from mnist_loc.placement import scene_attempt, scene_counts, stream_key
from mnist_loc.task import TASKS, Task

MULTI = TASKS["multi-mnist"]
SMALL = MULTI.replace(canvases=(256, 96, 96))  # the same rules, fewer canvases


def white_digits(n=20):
    """Solid 28x28 squares at 255, labels 0..9: any two that overlap overflow, and ink box = patch."""
    images = np.full((n, 28, 28, 1), 255, np.uint8)
    labels = np.arange(n) % 10
    return Digits.from_arrays((images, labels), (images, labels), (images, labels))


def test_the_task_is_airs_multi_mnist():
    assert (MULTI.canvas_size, MULTI.count, MULTI.box, MULTI.canvases) == (50, (0, 2), "ink", (60_000, 5_000, 10_000))
    assert MULTI.kind == "detection" and MULTI.max_count == 2 and TASKS["course"].kind == "localization"
    assert Task.from_dict(MULTI.to_dict()) == MULTI
    with pytest.raises(ValueError, match="one digit per canvas"):
        Task(count=(0, 2))
    with pytest.raises(ValueError, match="box='ink', clutter=0"):
        MULTI.replace(clutter=2)


def test_counts_are_uniform_over_zero_one_two():
    counts = scene_counts(30_000, stream_key(0, 3, 0), MULTI).numpy()
    share = np.bincount(counts, minlength=3) / len(counts)
    assert counts.min() == 0 and counts.max() == 2 and np.all(np.abs(share - 1 / 3) < 0.01)


def test_sizes_follow_the_scale_and_offsets_never_reach_the_last_position():
    layout = {k: v.numpy() for k, v in scene_attempt(100_000, 1000, stream_key(0, 1, 0), MULTI).items()}
    sizes, offsets = layout["sizes"], layout["offsets"]
    # int(28 / s), s ~ Normal(1.3, 0.1): median int(28 / 1.3) = 21; the sizes' 5% point at s = 1.4645
    # is int(19.12) = 19, their 95% point at s = 1.1355 is int(24.66) = 24.
    assert np.median(sizes) == 21 and np.percentile(sizes, 5) == 19 and np.percentile(sizes, 95) == 24
    room = 50 - sizes[..., None]  # randint(0, 50 - w): 0 .. 50 - w - 1
    assert offsets.min() == 0 and np.all(offsets <= room - 1) and np.any(offsets == room - 1)
    assert 0 <= layout["sources"].min() and layout["sources"].max() == 999


def test_digits_that_would_overflow_are_drawn_again():
    digits = white_digits()
    images, labels, boxes = canvases_at("test", np.arange(96), digits=digits, task=SMALL)
    two = (labels >= 0).sum(1) == 2
    assert two.sum() > 20 and images.max() == 1.0
    for box_a, box_b in boxes[two]:
        overlap = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]), min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
        assert min(overlap) <= 0, "solid squares may touch, never overlap"
    # The ink is exactly the pasted squares: the canvas sums their areas.
    areas = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]) * 50**2 * (labels >= 0)).sum(1)
    np.testing.assert_allclose(images.sum(axis=(1, 2, 3)), areas, rtol=1e-4)


def test_targets_are_padded_in_drawing_order(mnist_digits):
    digits = Digits.from_arrays(*(mnist_digits.split(s) for s in ("train", "validation", "test")))
    images, labels, boxes = canvases_at("validation", np.arange(96), digits=digits, task=SMALL)
    assert images.shape == (96, 50, 50, 1) and labels.shape == (96, 2) and boxes.shape == (96, 2, 4)
    assert labels.dtype == np.int64 and boxes.dtype == np.float32
    missing = labels < 0
    assert np.all(missing[:, 0] <= missing[:, 1]), "a canvas of one digit fills slot 0"
    assert np.all(boxes[missing] == 0) and np.all((boxes[~missing][:, 2:] > boxes[~missing][:, :2]))
    np.testing.assert_array_equal(images[missing.all(1)], 0)


def test_a_canvas_is_a_pure_function_of_seed_split_pass_index(mnist_digits):
    digits = Digits.from_arrays(*(mnist_digits.split(s) for s in ("train", "validation", "test")))
    whole = [(x.numpy(), y["labels"].numpy(), y["boxes"].numpy()) for x, y in make_dataset("test", digits, task=SMALL, batch_size=40, seed=4)]
    x, labels, boxes = (np.concatenate(p) for p in zip(*whole))
    picked = canvases_at("test", [95, 3, 50], digits=digits, task=SMALL, seed=4)
    for got, want in zip(picked, (x, labels, boxes)):
        np.testing.assert_array_equal(got, want[[95, 3, 50]])
    other = canvases_at("test", np.arange(96), digits=digits, task=SMALL, seed=5)[0]
    assert np.mean([np.array_equal(a, b) for a, b in zip(other, x)]) < 0.3, "another seed: other canvases (empty ones aside)"
    stream = make_dataset("train", digits, task=SMALL, batch_size=32, seed=4)
    batches = [y["labels"].numpy() for _, y in stream.take(16)]  # two passes of 8 batches
    resumed = [y["labels"].numpy() for _, y in make_dataset("train", digits, task=SMALL, batch_size=32, seed=4, first_step=11).take(5)]
    assert not np.array_equal(np.concatenate(batches[:8]), np.concatenate(batches[8:])), "a new drawing each pass"
    np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate(batches[11:16]))


MULTI_GOLDEN = "efc82811ad9ca9480be5326959bbc5973da50535180fc4918e4feaeb285641ac"  # first 1,000 multi-mnist test canvases + targets, seed 0 (commit 4f5a9c4)


def test_multi_mnist_test_canvases_are_pinned(mnist_digits):
    h = hashlib.sha256()
    for x, y in make_dataset("test", mnist_digits, task=MULTI, batch_size=500).take(2):
        for array in (x, y["labels"], y["boxes"]):
            h.update(array.numpy().tobytes())
    assert h.hexdigest() == MULTI_GOLDEN
