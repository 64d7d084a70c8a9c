"""The in-memory digits and the canvas streams drawn from them: reproducible, resumable, byte-identical to before."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from mnist_loc.data import Digits, _canvas_batches, canvases_at, make_dataset
from mnist_loc.placement import draw_layout, stream_key
from mnist_loc.task import TASKS, get_task
from conftest import fake_digits, synthetic_digits

S = 75


def canvas_stream(images, labels, *, task=None, batch_size=64, seed=0, training=False, first_step=0, num_parallel_calls=tf.data.AUTOTUNE):
    """The canvas stream of in-memory arrays as make_dataset draws it, with stream code 0 (as the golden digests were drawn)."""
    return _canvas_batches(images, labels, 10, get_task(task), batch_size, seed, 0, training, first_step, num_parallel_calls)


def first_batch(ds):
    images, targets = next(iter(ds))
    return images.numpy(), targets["classification"].numpy(), targets["bounding_box"].numpy()


def test_shapes_dtypes_and_targets():
    images, labels = synthetic_digits(12)
    x, onehot, boxes = first_batch(canvas_stream(images, labels, batch_size=8))
    assert x.shape == (8, S, S, 1) and x.dtype == np.float32
    assert onehot.shape == (8, 10) and onehot.dtype == np.float32
    assert boxes.shape == (8, 4) and boxes.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(onehot.argmax(-1), labels[:8])
    np.testing.assert_array_equal(onehot.sum(-1), np.ones(8))


def test_same_seed_same_bytes_across_builds_and_parallelism():
    images, labels = synthetic_digits(40)
    for training in (False, True):
        a = canvas_stream(images, labels, batch_size=8, seed=3, training=training, num_parallel_calls=1)
        b = canvas_stream(images, labels, batch_size=8, seed=3, training=training, num_parallel_calls=tf.data.AUTOTUNE)
        for (xa, ya), (xb, yb) in zip(a.take(6), b.take(6)):
            assert xa.numpy().tobytes() == xb.numpy().tobytes()
            assert ya["bounding_box"].numpy().tobytes() == yb["bounding_box"].numpy().tobytes()


def test_different_seed_different_placement():
    images, labels = synthetic_digits(16)
    _, _, a = first_batch(canvas_stream(images, labels, batch_size=16, seed=0))
    _, _, b = first_batch(canvas_stream(images, labels, batch_size=16, seed=1))
    assert not np.array_equal(a, b)


def test_evaluation_split_is_one_fixed_pass():
    images, labels = synthetic_digits(10)
    ds = canvas_stream(images, labels, batch_size=4)
    sizes = [int(x.shape[0]) for x, _ in ds]
    assert sizes == [4, 4, 2]
    first = np.concatenate([y["bounding_box"].numpy() for _, y in ds])
    second = np.concatenate([y["bounding_box"].numpy() for _, y in ds])
    np.testing.assert_array_equal(first, second)


def test_training_new_placement_each_pass_and_resume_mid_stream():
    images, labels = synthetic_digits(16)
    ds = canvas_stream(images, labels, batch_size=8, training=True, seed=5)
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
    resumed = canvas_stream(images, labels, batch_size=8, training=True, seed=5, first_step=3)
    x, _ = next(iter(resumed))
    assert x.numpy().tobytes() == batches[3][0].tobytes()


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-1, ValueError), (2.5, TypeError)])
def test_bad_batch_size(bad, error):
    with pytest.raises(error, match="batch_size"):
        make_dataset("test", fake_digits(), batch_size=bad)


def test_unknown_split_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown split 'training'.*\['test', 'train', 'validation'\]"):
        make_dataset("training", fake_digits())
    with pytest.raises(ValueError, match="unknown split"):
        fake_digits().split("dev")


def test_own_arrays_make_digits_any_task_can_use_and_tfds_digits_only_their_own():
    images, labels = synthetic_digits(12)
    digits = Digits.from_arrays((images[..., 0], labels), (images, labels), (images, labels))
    assert digits.class_names == tuple(str(c) for c in range(10)) and digits.split("train")[0].shape == (12, 28, 28, 1)
    assert not digits.split("train")[0].flags.writeable, "a run's digits cannot change under it"
    x, y = next(iter(make_dataset("validation", digits, task="cluttered-60", batch_size=12)))
    assert x.shape == (12, 60, 60, 1)
    np.testing.assert_array_equal(y["classification"].numpy().argmax(-1), labels)
    mnist = Digits(digits.class_names, digits.arrays, source=("mnist", "tfds"))
    with pytest.raises(ValueError, match="these digits are mnist with tfds splits, the task needs mnist with mnist-cluttered splits"):
        make_dataset("test", mnist, task="cluttered-60")


def test_real_mnist_splits(mnist_digits):
    sizes = {s: mnist_digits.split(s)[0].shape for s in ("train", "validation", "test")}
    assert sizes == {"train": (55000, 28, 28, 1), "validation": (5000, 28, 28, 1), "test": (10000, 28, 28, 1)}
    assert mnist_digits.split("test")[0].dtype == np.uint8 and mnist_digits.split("test")[1].dtype == np.int64
    assert mnist_digits.class_names == tuple(str(d) for d in range(10)) and mnist_digits.source == ("mnist", "tfds")
    ds = make_dataset("test", mnist_digits, batch_size=100)
    x, y = next(iter(ds))
    assert x.shape == (100, S, S, 1)
    idx = [0, 5, 99]
    canvases, labels, boxes = canvases_at("test", idx, digits=mnist_digits)
    np.testing.assert_array_equal(canvases, x.numpy()[idx])
    np.testing.assert_array_equal(boxes, y["bounding_box"].numpy()[idx])
    np.testing.assert_array_equal(labels, y["classification"].numpy()[idx].argmax(-1))


GOLDEN = {  # sha256 of the canvases, boxes and one-hots before scale/ink/clutter existed (commit 112271a)
    "synthetic eval": "bfd8158880a92e2aa9690a2563fd830189a72756c6c8cfc7fbb48236c6d5eee9",
    "synthetic train": "cfd03525dc09d231f55c5fc68224c80223aa0c9da1757f2ea2c88e9a81eee6c3",
    "mnist test": "ed9473c0ef21cbf21d803192691be99c348dda195a3ee661e05ff5b38a169e9d",
    "mnist validation": "f408d5297090a63dc073f7076eb116a004eb83ec647e1ed991d6bdf4f267f60b",
    "mnist train": "1f3ed1f96bcd95a6c98b9882e077e4750be1bd4ded33d7ca9b00eeaafa2146aa",
}


def digest(ds, batches):
    h = hashlib.sha256()
    for x, y in ds.take(batches):
        for array in (x, y["bounding_box"], y["classification"]):
            h.update(array.numpy().tobytes())
    return h.hexdigest()


def test_default_task_keeps_the_old_canvases_byte_for_byte():
    images, labels = synthetic_digits(40, seed=7)
    assert digest(canvas_stream(images, labels, batch_size=8, seed=3), 100) == GOLDEN["synthetic eval"]
    assert digest(canvas_stream(images, labels, batch_size=8, seed=3, training=True), 15) == GOLDEN["synthetic train"]


def test_default_task_keeps_the_old_mnist_canvases_byte_for_byte(mnist_digits):
    assert digest(make_dataset("test", mnist_digits, batch_size=500), 100) == GOLDEN["mnist test"]
    assert digest(make_dataset("validation", mnist_digits, batch_size=500), 100) == GOLDEN["mnist validation"]
    assert digest(make_dataset("train", mnist_digits, batch_size=128), 40) == GOLDEN["mnist train"]




def test_scaled_ink_clutter_canvases_are_reproducible_across_parallelism():
    images, labels = synthetic_digits(40)
    for task in (TASKS["sized-cluttered"], TASKS["cluttered-60"]):
        for training in (False, True):
            a = canvas_stream(images, labels, task=task, batch_size=8, seed=3, training=training, num_parallel_calls=1)
            b = canvas_stream(images, labels, task=task, batch_size=8, seed=3, training=training)
            assert digest(a, 6) == digest(b, 6)
    c = canvas_stream(images, labels, task=task, batch_size=8, seed=4)
    assert digest(a, 6) != digest(c, 6)


def test_clutter_leaves_the_target_and_its_box_intact():
    images, labels = synthetic_digits(40)
    plain = canvas_stream(images, labels, task="sized", batch_size=40, seed=2)
    cluttered = canvas_stream(images, labels, task="sized-cluttered", batch_size=40, seed=2)
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(cluttered))
    x0, x1 = x0.numpy()[..., 0], x1.numpy()[..., 0]
    np.testing.assert_array_equal(y0["bounding_box"].numpy(), y1["bounding_box"].numpy())
    added = 0
    for k in range(40):
        patch = x0[k] > 0  # synthetic digits have no zero pixel: the patch is where the target is
        np.testing.assert_array_equal(x1[k][patch], x0[k][patch])
        added += int(((x1[k] > 0) & ~patch).sum())
        assert 0.0 <= x1[k].min() and x1[k].max() <= 1.0
    assert added > 40 * 4 * 8, "fragments were added outside the targets"


def test_canvases_at_matches_the_dataset_for_a_harder_task(mnist_digits):
    task = TASKS["sized"].replace(clutter=2)
    x, y = next(iter(make_dataset("test", mnist_digits, task=task, batch_size=100, seed=4)))
    idx = [0, 7, 99]
    canvases, labels, boxes = canvases_at("test", idx, task=task, digits=mnist_digits, seed=4)
    assert canvases.tobytes() == x.numpy()[idx].tobytes()
    np.testing.assert_array_equal(boxes, y["bounding_box"].numpy()[idx])
    np.testing.assert_array_equal(labels, y["classification"].numpy()[idx].argmax(-1))


def test_literature_canvas_is_distractors_then_target_by_a_numpy_reference():
    images, labels = synthetic_digits(30, seed=4)
    task = TASKS["cluttered-60"]
    x, y = next(iter(canvas_stream(images, labels, task=task, batch_size=30, seed=6)))
    x, boxes = x.numpy()[..., 0], y["bounding_box"].numpy()
    layout = {k: v.numpy() for k, v in draw_layout(30, stream_key(6, 0, 0), task).items()}
    for i in range(30):
        canvas = np.zeros((60, 60), np.float64)
        for (cx, cy), (px, py), src in zip(layout["crops"][i], layout["positions"][i], layout["sources"][i]):
            canvas[py:py + 8, px:px + 8] += images[src, cy:cy + 8, cx:cx + 8, 0] / 255.0
        canvas = np.minimum(canvas, 1.0)
        ox, oy = layout["offsets"][i]
        canvas[oy:oy + 28, ox:ox + 28] += images[i, ..., 0] / 255.0
        np.testing.assert_allclose(x[i], np.clip(canvas, 0, 1), atol=1e-6)
        np.testing.assert_allclose(boxes[i], np.array([ox, oy, ox + 28, oy + 28]) / 60, atol=1e-7)


def test_mnist_cluttered_splits_are_mnist_file_order(mnist_dir, mnist_digits):
    digits = Digits.find("cluttered-60", mnist_dir)
    sizes = {s: len(digits.split(s)[1]) for s in ("train", "validation", "test")}
    assert sizes == {"train": 50_000, "validation": 10_000, "test": 10_000}
    # The first labels of MNIST's files (train-labels-idx1-ubyte, t10k-labels-idx1-ubyte).
    assert digits.split("train")[1][:20].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5, 3, 6, 1, 7, 2, 8, 6, 9]
    assert digits.split("test")[1][:20].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6, 9, 0, 1, 5, 9, 7, 3, 4]
    course = mnist_digits
    whole = np.concatenate([digits.split("train")[0], digits.split("validation")[0]])
    tfds_order = np.concatenate([course.split("train")[0], course.split("validation")[0]])
    assert whole.shape == tfds_order.shape and whole.tobytes() != tfds_order.tobytes()
    assert np.array_equal(np.sort(whole.reshape(60000, -1).sum(1)), np.sort(tfds_order.reshape(60000, -1).sum(1)))
    ds = make_dataset("test", digits, task="cluttered-60", batch_size=50)
    x, y = next(iter(ds))
    assert x.shape == (50, 60, 60, 1)
    np.testing.assert_array_equal(y["classification"].numpy().argmax(-1), digits.split("test")[1][:50])  # canvas i holds digit i
