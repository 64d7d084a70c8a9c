"""MNIST digits and the canvases they are placed on.

A 28x28 digit is pasted at a random integer offset ``(x, y)`` on a black ``S x S``
canvas (``S = canvas_size``, 75 by default). The target box is the 28x28 patch,
``[xmin, ymin, xmax, ymax] = [x, y, x + 28, y + 28] / S``: edges in continuous pixel
coordinates, normalized by the canvas size, so pixel column ``c`` spans ``[c, c + 1)``.

Placement is drawn with stateless random ops keyed by ``(seed, split, pass)`` and
indexed by the example's position in the split, so a canvas depends on nothing but
those numbers: not on parallelism, order of evaluation or how many batches came
before. Validation and test are one fixed draw per seed. Training is an endless
stream of passes over the split; pass ``p`` has its own shuffle and placement.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from .config import DIGIT_SIZE, check_canvas_size, check_positive_int
from .datasets import DataNotFoundError, prepared_dir  # noqa: F401  DataNotFoundError is re-exported
from .quiet import cpp_logs_filtered

NUM_CLASSES = 10
# Validation is the last twelfth of tfds' train split (MNIST: 5,000 of 60,000), train the rest.
SPLITS = ("train", "validation", "test")
VALIDATION_FRACTION = 12
# Distinct stream codes keep the splits' draws independent under the same seed.
_SPLIT_CODES = {"train": 1, "validation": 2, "test": 3}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {sorted(SPLITS)}")
    return split


def tfds_split(split: str, num_train: int) -> str:
    """The tfds slice of one of our splits, given the size of tfds' train split."""
    first_validation = num_train - num_train // VALIDATION_FRACTION
    return {"train": f"train[:{first_validation}]", "validation": f"train[{first_validation}:]", "test": "test"}[_check_split(split)]


@functools.lru_cache(maxsize=8)
def _load_arrays(split: str, folder: str):
    import tensorflow_datasets as tfds  # imported lazily: it takes seconds

    builder = tfds.builder("mnist", data_dir=folder)
    with cpp_logs_filtered():  # the first tfrecord read logs a buffer size from C++
        images, labels = tfds.as_numpy(builder.as_dataset(
            split=tfds_split(split, builder.info.splits["train"].num_examples), as_supervised=True, batch_size=-1,
        ))
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digit_arrays(split: str, data_dir=None, *, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Return one split of MNIST as read-only numpy arrays, cached per process.

    Returns ``(images, labels)``: uint8 ``[N, 28, 28, 1]`` and int64 ``[N]``.
    ``split`` is ``"train"`` (first 55,000 of tfds train), ``"validation"`` (last
    5,000) or ``"test"`` (10,000). MNIST is read from the first of ``data_dir``,
    ``$TFDS_DATA_DIR`` and ``~/tensorflow_datasets`` that holds it prepared; if none
    does, it is downloaded once (about 11 MB) into the first of them, unless
    ``download=False``. Raises :class:`DataNotFoundError` saying what to do when it
    is not prepared and cannot (or may not) be downloaded; offline that takes seconds.
    """
    _check_split(split)
    return _load_arrays(split, prepared_dir("mnist", data_dir, download=download))


def load_digits(split: str, data_dir=None, *, download: bool = True) -> tf.data.Dataset:
    """Return a split of MNIST as a ``tf.data.Dataset`` of ``(image, label)``.

    ``image`` is uint8 ``[28, 28, 1]``, ``label`` int64 ``[]``. Splits and errors as
    in :func:`load_digit_arrays`.
    """
    return tf.data.Dataset.from_tensor_slices(load_digit_arrays(split, data_dir, download=download))


def place_digits(digits, offsets, canvas_size: int = 75):
    """Paste each digit on a black canvas at its offset.

    Args:
      digits: uint8 ``[B, 28, 28, 1]`` (or ``[B, 28, 28]``) digits, 0..255.
      offsets: int ``[B, 2]`` top-left ``(x, y)`` of each digit, each in ``[0, S - 28]``.
      canvas_size: ``S``.

    Returns:
      ``(canvases, boxes)``: float32 ``[B, S, S, 1]`` in [0, 1], equal to digit/255
      inside the patch and 0 elsewhere; float32 ``[B, 4]`` boxes
      ``[xmin, ymin, xmax, ymax] / S``.

    Raises ``tf.errors.InvalidArgumentError`` if an offset is negative or puts the
    digit outside the canvas.
    """
    size = check_canvas_size(canvas_size)
    offsets = tf.cast(offsets, tf.int32)
    tf.debugging.assert_non_negative(offsets, message="digit offsets must be >= 0")
    tf.debugging.assert_less_equal(
        offsets, size - DIGIT_SIZE, message="digit offset puts the digit outside the canvas"
    )
    return _paste(digits, offsets, size)


def _paste(digits, offsets, size: int):
    """:func:`place_digits` without the offset checks, for int32 offsets drawn in range.

    The input pipeline calls this: its offsets come from :func:`random_offsets`, and
    assert ops in a ``map`` would only add work to every batch.
    """
    pixels = tf.cast(tf.reshape(digits, [-1, DIGIT_SIZE, DIGIT_SIZE]), tf.float32) / 255.0
    # Shift matrices: digit column c lands on canvas column x + c, digit row r on
    # canvas row y + r. Two batched matmuls paste a whole batch, about 4x cheaper than
    # a scatter; every canvas pixel is one digit pixel times 1.0 plus zeros, so exact.
    span = tf.range(DIGIT_SIZE)
    columns = tf.one_hot(offsets[:, 0:1] + span, size, dtype=tf.float32)  # [B, 28, S]
    rows = tf.one_hot(offsets[:, 1:2] + span, size, dtype=tf.float32)  # [B, 28, S]
    canvases = tf.matmul(rows, tf.matmul(pixels, columns), transpose_a=True)[..., None]
    xy = tf.cast(offsets, tf.float32)
    boxes = tf.concat([xy, xy + DIGIT_SIZE], axis=-1) / float(size)
    return canvases, boxes


def _stream_key(seed: int, split_code: int, pass_index):
    """Stateless-RNG key for one pass of one split: a pure function of its inputs."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), split_code)
    return tf.random.experimental.stateless_fold_in(key, tf.cast(pass_index, tf.int64))


def random_offsets(num_examples: int, canvas_size: int, key):
    """Uniform integer top-left offsets ``(x, y)`` in ``[0, S - 28]``, both ends included.

    Returns int32 ``[num_examples, 2]``; row ``i`` belongs to example ``i`` of the split.
    """
    high = check_canvas_size(canvas_size) - DIGIT_SIZE + 1  # maxval is exclusive
    return tf.random.stateless_uniform(
        [num_examples, 2], seed=key, minval=0, maxval=high, dtype=tf.int32
    )


def make_canvas_dataset(
    images,
    labels,
    *,
    batch_size: int = 64,
    canvas_size: int = 75,
    seed: int = 0,
    training: bool = False,
    split_code: int = 0,
    first_step: int = 0,
    num_parallel_calls=tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Canvas batches from in-memory digits; :func:`make_dataset` without tfds.

    Args:
      images: uint8 ``[N, 28, 28, 1]`` digits.
      labels: int ``[N]`` class ids in ``[0, 10)``.
      training: if False, one pass in order with one fixed placement per seed and a
        smaller last batch. If True, an endless stream of shuffled passes of
        ``N // batch_size`` full batches; pass ``p`` is shuffled and placed with
        ``(seed, p)``. ``first_step`` skips that many batches of the stream for
        free (used to resume training mid-stream).
      split_code: keeps different splits' draws independent under one seed.
      num_parallel_calls: parallelism of the placement; it never changes the output.

    Returns:
      ``tf.data.Dataset`` of ``(images, targets)``: float32 ``[B, S, S, 1]`` canvases
      and ``{"classification": float32 one-hot [B, 10], "bounding_box": float32 [B, 4]}``
      with boxes ``[xmin, ymin, xmax, ymax] / S``.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    canvas_size = check_canvas_size(canvas_size)
    seed = int(seed)
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE, 1) or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, 28, 28, 1], got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape [{len(images)}], got {labels.shape}")
    num_examples = len(images)
    if num_examples == 0:
        raise ValueError("no digits to place: images is empty")
    digits = tf.constant(images)
    classes = tf.one_hot(tf.constant(labels), NUM_CLASSES, dtype=tf.float32)

    def assemble(indices, offsets):
        canvases, boxes = _paste(tf.gather(digits, indices), offsets, canvas_size)
        return canvases, {"classification": tf.gather(classes, indices), "bounding_box": boxes}

    if not training:
        offsets = random_offsets(num_examples, canvas_size, _stream_key(seed, split_code, 0))
        ds = tf.data.Dataset.from_tensor_slices((tf.range(num_examples), offsets))
        ds = ds.batch(batch_size)
    else:
        steps_per_pass = num_examples // batch_size
        if steps_per_pass == 0:
            raise ValueError(
                f"batch_size {batch_size} is larger than the {num_examples} training digits"
            )
        first_step = check_positive_int(first_step, "first_step", minimum=0)

        def one_pass(pass_index):
            key = _stream_key(seed, split_code, pass_index)
            order = tf.argsort(
                tf.random.stateless_uniform([num_examples], seed=tf.random.experimental.stateless_fold_in(key, 1))
            )[: steps_per_pass * batch_size]
            offsets = tf.gather(random_offsets(num_examples, canvas_size, key), order)
            return tf.data.Dataset.from_tensor_slices(
                (
                    tf.reshape(order, [steps_per_pass, batch_size]),
                    tf.reshape(offsets, [steps_per_pass, batch_size, 2]),
                )
            )

        first_pass = first_step // steps_per_pass
        ds = tf.data.Dataset.counter(first_pass).flat_map(one_pass)
        ds = ds.skip(first_step - first_pass * steps_per_pass)
    ds = ds.map(assemble, num_parallel_calls=num_parallel_calls, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_dataset(
    split: str,
    *,
    batch_size: int = 64,
    canvas_size: int = 75,
    seed: int = 0,
    training=None,
    data_dir=None,
    download: bool = True,
    first_step: int = 0,
) -> tf.data.Dataset:
    """Batches of MNIST digits placed on black canvases, with class and box targets.

    Args:
      split: ``"train"``, ``"validation"`` or ``"test"``.
      batch_size: examples per batch (> 0).
      canvas_size: ``S``, an integer >= 28.
      seed: selects the placement (and, in training, the shuffle). The same seed
        always gives byte-identical canvases and boxes.
      training: default True for ``"train"``, else False. See
        :func:`make_canvas_dataset`: training is an endless stream of reshuffled,
        re-placed passes (use ``steps_per_epoch`` or ``take``); evaluation is one
        pass with one fixed placement per seed.
      data_dir: tfds data directory searched first (then ``$TFDS_DATA_DIR``, then
        ``~/tensorflow_datasets``); see :func:`load_digit_arrays`.
      download: if MNIST is prepared in none of them, download it once (default);
        with False, raise :class:`DataNotFoundError` instead.
      first_step: training only: start the stream at this batch (resume).

    Returns:
      ``tf.data.Dataset`` of ``(images, targets)``: images float32 ``[B, S, S, 1]`` in
      [0, 1]; targets ``{"classification": float32 one-hot [B, 10],
      "bounding_box": float32 [B, 4]}``, boxes ``[xmin, ymin, xmax, ymax] / S``.
    """
    _check_split(split)
    batch_size = check_positive_int(batch_size, "batch_size")
    canvas_size = check_canvas_size(canvas_size)
    if training is None:
        training = split == "train"
    images, labels = load_digit_arrays(split, data_dir, download=download)
    return make_canvas_dataset(
        images,
        labels,
        batch_size=batch_size,
        canvas_size=canvas_size,
        seed=seed,
        training=bool(training),
        split_code=_SPLIT_CODES[split],
        first_step=first_step,
    )


def canvases_at(split: str, indices, *, canvas_size: int = 75, seed: int = 0, data_dir=None, download: bool = True):
    """The fixed evaluation canvases of ``split`` at ``indices``, without building the rest.

    Same canvases and targets as example ``indices[i]`` of
    ``make_dataset(split, training=False, seed=seed, canvas_size=canvas_size)``.

    Returns ``(images float32 [K, S, S, 1], labels int64 [K], boxes float32 [K, 4])``.
    """
    canvas_size = check_canvas_size(canvas_size)
    images, labels = load_digit_arrays(split, data_dir, download=download)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= len(images)):
        raise ValueError(f"indices must lie in [0, {len(images)}) for split {split!r}")
    offsets = random_offsets(len(images), canvas_size, _stream_key(int(seed), _SPLIT_CODES[split], 0))
    canvases, boxes = place_digits(images[indices], tf.gather(offsets, indices), canvas_size)
    return canvases.numpy(), labels[indices], boxes.numpy()
