import hashlib

import numpy as np
import pytest
import tensorflow as tf

from mnist_loc.data import (
    INK_THRESHOLD,
    DataNotFoundError,
    canvases_at,
    draw_layout,
    load_digits,
    make_canvas_dataset,
    make_dataset,
    place_digits,
    random_offsets,
)
from mnist_loc.task import TASKS, Task
from conftest import synthetic_digits

S = 75


def first_batch(ds):
    images, targets = next(iter(ds))
    return images.numpy(), targets["classification"].numpy(), targets["bounding_box"].numpy()


def test_shapes_dtypes_and_targets():
    images, labels = synthetic_digits(12)
    x, onehot, boxes = first_batch(make_canvas_dataset(images, labels, batch_size=8))
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


# --- the task knobs: scale, ink boxes, clutter, other datasets ---

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
    assert digest(make_canvas_dataset(images, labels, batch_size=8, seed=3), 100) == GOLDEN["synthetic eval"]
    assert digest(make_canvas_dataset(images, labels, batch_size=8, seed=3, training=True), 15) == GOLDEN["synthetic train"]


@pytest.mark.e2e
def test_default_task_keeps_the_old_mnist_canvases_byte_for_byte(mnist_dir):
    assert digest(make_dataset("test", batch_size=500, data_dir=mnist_dir), 100) == GOLDEN["mnist test"]
    assert digest(make_dataset("validation", batch_size=500, data_dir=mnist_dir), 100) == GOLDEN["mnist validation"]
    assert digest(make_dataset("train", batch_size=128, data_dir=mnist_dir), 40) == GOLDEN["mnist train"]


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


def test_scaled_ink_clutter_canvases_are_reproducible_across_parallelism():
    images, labels = synthetic_digits(40)
    for task in (TASKS["sized-cluttered"], TASKS["cluttered-60"]):
        for training in (False, True):
            a = make_canvas_dataset(images, labels, task=task, batch_size=8, seed=3, training=training, num_parallel_calls=1)
            b = make_canvas_dataset(images, labels, task=task, batch_size=8, seed=3, training=training)
            assert digest(a, 6) == digest(b, 6)
    c = make_canvas_dataset(images, labels, task=task, batch_size=8, seed=4)
    assert digest(a, 6) != digest(c, 6)


def test_clutter_leaves_the_target_and_its_box_intact():
    images, labels = synthetic_digits(40)
    plain = make_canvas_dataset(images, labels, task="sized", batch_size=40, seed=2)
    cluttered = make_canvas_dataset(images, labels, task="sized-cluttered", batch_size=40, seed=2)
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


def test_clutter_fragments_come_from_other_digits():
    layout = draw_layout(50, tf.constant([0, 5], tf.int64), Task(clutter=6))
    sources = layout["sources"].numpy()
    assert sources.shape == (50, 6) and sources.min() >= 0 and sources.max() < 50
    assert not (sources == np.arange(50)[:, None]).any()
    assert (layout["positions"].numpy() <= S - 8).all() and (layout["crops"].numpy() <= 20).all()


def test_clutter_fragment_is_the_crop_pasted_where_drawn_and_cut_at_the_patch():
    from mnist_loc.data import _add_clutter

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


@pytest.mark.e2e
def test_canvases_at_matches_the_dataset_for_a_harder_task(mnist_dir):
    task = TASKS["sized"].replace(clutter=2)
    x, y = next(iter(make_dataset("test", task=task, batch_size=100, data_dir=mnist_dir, seed=4)))
    idx = [0, 7, 99]
    canvases, labels, boxes = canvases_at("test", idx, task=task, data_dir=mnist_dir, seed=4)
    assert canvases.tobytes() == x.numpy()[idx].tobytes()
    np.testing.assert_array_equal(boxes, y["bounding_box"].numpy()[idx])
    np.testing.assert_array_equal(labels, y["classification"].numpy()[idx].argmax(-1))


# --- the literature's tasks: DeepMind's mnist-cluttered rules ---

def test_a_distractor_over_the_target_adds_and_clips():
    from mnist_loc.data import _add_clutter

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
    from mnist_loc.data import _add_clutter

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


def test_literature_canvas_is_distractors_then_target_by_a_numpy_reference():
    images, labels = synthetic_digits(30, seed=4)
    task = TASKS["cluttered-60"]
    x, y = next(iter(make_canvas_dataset(images, labels, task=task, batch_size=30, seed=6)))
    x, boxes = x.numpy()[..., 0], y["bounding_box"].numpy()
    from mnist_loc.data import _stream_key  # make_canvas_dataset draws with split_code 0

    layout = {k: v.numpy() for k, v in draw_layout(30, _stream_key(6, 0, 0), task).items()}
    for i in range(30):
        canvas = np.zeros((60, 60), np.float64)
        for (cx, cy), (px, py), src in zip(layout["crops"][i], layout["positions"][i], layout["sources"][i]):
            canvas[py:py + 8, px:px + 8] += images[src, cy:cy + 8, cx:cx + 8, 0] / 255.0
        canvas = np.minimum(canvas, 1.0)
        ox, oy = layout["offsets"][i]
        canvas[oy:oy + 28, ox:ox + 28] += images[i, ..., 0] / 255.0
        np.testing.assert_allclose(x[i], np.clip(canvas, 0, 1), atol=1e-6)
        np.testing.assert_allclose(boxes[i], np.array([ox, oy, ox + 28, oy + 28]) / 60, atol=1e-7)


@pytest.mark.e2e
def test_mnist_cluttered_splits_are_mnist_file_order(mnist_dir):
    from mnist_loc.data import Digits

    digits = Digits.find("cluttered-60", mnist_dir)
    sizes = {s: len(digits.split(s)[1]) for s in ("train", "validation", "test")}
    assert sizes == {"train": 50_000, "validation": 10_000, "test": 10_000}
    # The first labels of MNIST's files (train-labels-idx1-ubyte, t10k-labels-idx1-ubyte).
    assert digits.split("train")[1][:20].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5, 3, 6, 1, 7, 2, 8, 6, 9]
    assert digits.split("test")[1][:20].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6, 9, 0, 1, 5, 9, 7, 3, 4]
    course = Digits.find("course", mnist_dir)
    whole = np.concatenate([digits.split("train")[0], digits.split("validation")[0]])
    assert sorted(map(bytes, whole[::997])) != [], "same digits, other order"
    tfds_order = np.concatenate([course.split("train")[0], course.split("validation")[0]])
    assert whole.shape == tfds_order.shape and whole.tobytes() != tfds_order.tobytes()
    assert np.array_equal(np.sort(whole.reshape(60000, -1).sum(1)), np.sort(tfds_order.reshape(60000, -1).sum(1)))
    ds = make_dataset("test", task="cluttered-60", batch_size=50, data_dir=mnist_dir)
    x, y = next(iter(ds))
    assert x.shape == (50, 60, 60, 1)
    np.testing.assert_array_equal(y["classification"].numpy().argmax(-1), digits.split("test")[1][:50])  # canvas i holds digit i
