import numpy as np
import pytest
import tensorflow as tf

from mnist_loc.data import (
    DataNotFoundError,
    canvases_at,
    load_digits,
    make_canvas_dataset,
    make_dataset,
    place_digits,
    random_offsets,
)
from conftest import synthetic_digits

S = 75


def first_batch(ds):
    images, targets = next(iter(ds))
    return images.numpy(), targets["classification"].numpy(), targets["bounding_box"].numpy()


def test_shapes_dtypes_and_targets():
    images, labels = synthetic_digits(12)
    x, onehot, boxes = first_batch(make_canvas_dataset(images, labels, batch_size=8, canvas_size=S))
    assert x.shape == (8, S, S, 1) and x.dtype == np.float32
    assert onehot.shape == (8, 10) and onehot.dtype == np.float32
    assert boxes.shape == (8, 4) and boxes.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(onehot.argmax(-1), labels[:8])
    np.testing.assert_array_equal(onehot.sum(-1), np.ones(8))


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


def test_same_seed_same_bytes_across_builds_and_parallelism():
    images, labels = synthetic_digits(40)
    for training in (False, True):
        a = make_canvas_dataset(images, labels, batch_size=8, seed=3, training=training, num_parallel_calls=1)
        b = make_canvas_dataset(images, labels, batch_size=8, seed=3, training=training, num_parallel_calls=tf.data.AUTOTUNE)
        for (xa, ya), (xb, yb) in zip(a.take(6), b.take(6)):
            assert xa.numpy().tobytes() == xb.numpy().tobytes()
            assert ya["bounding_box"].numpy().tobytes() == yb["bounding_box"].numpy().tobytes()


def test_different_seed_different_placement():
    images, labels = synthetic_digits(16)
    _, _, a = first_batch(make_canvas_dataset(images, labels, batch_size=16, seed=0))
    _, _, b = first_batch(make_canvas_dataset(images, labels, batch_size=16, seed=1))
    assert not np.array_equal(a, b)


def test_evaluation_split_is_one_fixed_pass():
    images, labels = synthetic_digits(10)
    ds = make_canvas_dataset(images, labels, batch_size=4)
    sizes = [int(x.shape[0]) for x, _ in ds]
    assert sizes == [4, 4, 2]
    first = np.concatenate([y["bounding_box"].numpy() for _, y in ds])
    second = np.concatenate([y["bounding_box"].numpy() for _, y in ds])
    np.testing.assert_array_equal(first, second)


def test_training_new_placement_each_pass_and_resume_mid_stream():
    images, labels = synthetic_digits(16)
    ds = make_canvas_dataset(images, labels, batch_size=8, training=True, seed=5)
    batches = [(x.numpy(), y["classification"].numpy(), y["bounding_box"].numpy()) for x, y in ds.take(4)]
    # Pass 0 = batches 0-1, pass 1 = batches 2-3: match each example of pass 1 to pass 0 by its pixels.
    def by_digit(batch_pair):
        x = np.concatenate([b[0] for b in batch_pair])
        boxes = np.concatenate([b[2] for b in batch_pair])
        keyed = {}
        for canvas, box in zip(x, boxes):
            keyed[tuple(np.sort(canvas[canvas > 0]))] = box
        return keyed
    pass0, pass1 = by_digit(batches[:2]), by_digit(batches[2:])
    assert pass0.keys() == pass1.keys(), "every digit appears once per pass"
    moved = sum(not np.array_equal(pass0[k], pass1[k]) for k in pass0)
    assert moved >= 12, f"only {moved} of 16 digits were re-placed in the next pass"
    resumed = make_canvas_dataset(images, labels, batch_size=8, training=True, seed=5, first_step=3)
    x, _ = next(iter(resumed))
    assert x.numpy().tobytes() == batches[3][0].tobytes()


@pytest.mark.parametrize("bad", [27, 0, -5, 75.0, 75.5, "75", True])
def test_bad_canvas_size(bad):
    images, labels = synthetic_digits(4)
    with pytest.raises(ValueError, match="canvas_size"):
        make_canvas_dataset(images, labels, canvas_size=bad)


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-1, ValueError), (2.5, TypeError)])
def test_bad_batch_size(bad, error):
    images, labels = synthetic_digits(4)
    with pytest.raises(error, match="batch_size"):
        make_canvas_dataset(images, labels, batch_size=bad)


def test_unknown_split_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown split 'training'.*\['test', 'train', 'validation'\]"):
        make_dataset("training", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown split"):
        load_digits("dev", data_dir=str(tmp_path))


def test_missing_data_without_download_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="TFDS_DATA_DIR"):
        load_digits("test", data_dir=str(tmp_path), download=False)


def test_real_mnist_splits(mnist_dir):
    sizes = {s: sum(1 for _ in load_digits(s, data_dir=mnist_dir).batch(10000)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 6, "validation": 1, "test": 1}
    image, label = next(iter(load_digits("test", data_dir=mnist_dir)))
    assert image.shape == (28, 28, 1) and image.dtype == tf.uint8 and label.dtype == tf.int64
    ds = make_dataset("test", batch_size=100, data_dir=mnist_dir)
    x, y = next(iter(ds))
    assert x.shape == (100, S, S, 1)
    idx = [0, 5, 99]
    canvases, labels, boxes = canvases_at("test", idx, data_dir=mnist_dir)
    np.testing.assert_array_equal(canvases, x.numpy()[idx])
    np.testing.assert_array_equal(boxes, y["bounding_box"].numpy()[idx])
    np.testing.assert_array_equal(labels, y["classification"].numpy()[idx].argmax(-1))
