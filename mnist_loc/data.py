"""Digits and the canvases they are placed on.

A 28x28 digit (MNIST by default; any tfds dataset of 28x28x1 uint8 images) is resized by
a factor ``f`` (1 by default) to an ``s x s`` patch, ``s = round(28 f)``, and pasted at a
random integer offset ``(x, y)`` on a black ``S x S`` canvas (``S = canvas_size``, 75
by default), where it fits entirely. Boxes are ``[xmin, ymin, xmax, ymax]`` in
continuous pixel coordinates normalized by ``S`` (pixel column ``c`` spans
``[c, c + 1)``), either

- ``"patch"``: the pasted square, ``[x, y, x + s, y + s] / S`` (the course task), or
- ``"ink"``: the tightest box around the pasted pixels ``>= INK_THRESHOLD``, as pixel
  edges (first ink column, last ink column + 1, ...) / S.

Resizing is area resampling (each canvas pixel averages the part of the digit it covers:
antialiased when shrinking, a box filter when enlarging), written as the two batched
matmuls that paste the digit: interpolation weights instead of one-hot shifts.
With ``clutter = k``, ``k`` distractors (crops at native scale of digits of the same
split, as in DeepMind's mnist-cluttered) are added at uniform positions, by one of the two
rules of :mod:`mnist_loc.task`: cut off at the target's patch (mnist_loc's tasks), or
anywhere, before the target, as ``mnist_cluttered.lua`` does (the literature's tasks).
What the canvases are is a :class:`~mnist_loc.task.Task`; where the digits live is
found once per run (:class:`Digits`).

Every random choice is drawn with stateless random ops keyed by ``(seed, split, pass)``
and indexed by the example's position in the split, so a canvas depends on nothing but
those numbers and the task settings: not on parallelism, order of evaluation or how many
batches came before. Validation and test are one fixed draw per seed. Training is an
endless stream of passes over the split; pass ``p`` has its own shuffle and placement.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .datasets import DataNotFoundError, prepared_dir  # noqa: F401  DataNotFoundError is re-exported
from .quiet import cpp_logs_filtered
from .task import BOX_DEFINITIONS, DIGIT_SIZE, MNIST_CLUTTERED_VALIDATION, Task, check_canvas_size, check_positive_int, get_task

NUM_CLASSES = 10
SPLITS = ("train", "validation", "test")
# splits="tfds": validation is the last twelfth of tfds' train split (MNIST: 5,000 of 60,000).
VALIDATION_FRACTION = 12
# Distinct stream codes keep the splits' draws independent under the same seed.
_SPLIT_CODES = {"train": 1, "validation": 2, "test": 3}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {sorted(SPLITS)}")
    return split


def tfds_split(split: str, num_train: int) -> str:
    """The tfds slice of one of our splits (``splits="tfds"``), given the size of tfds' train split."""
    first_validation = num_train - num_train // VALIDATION_FRACTION
    return {"train": f"train[:{first_validation}]", "validation": f"train[{first_validation}:]", "test": "test"}[_check_split(split)]


def file_order(tfds_split_name: str, num_examples: int) -> np.ndarray:
    """Where each example of the original files sits in tfds' records: int64 ``[N]``,
    ``positions[k]`` = tfds record of the file's example ``k``.

    tfds writes a split's records sorted by a salted md5 of each example's key (its own
    ``hashing.Hasher``, the split name as salt); MNIST's builder keys examples by their
    index in the file, so sorting the keys' hashes gives the record order back.
    """
    from tensorflow_datasets.core import hashing

    hasher = hashing.Hasher(tfds_split_name)
    hashes = [hasher.hash_key(k) for k in range(num_examples)]
    positions = np.empty(num_examples, np.int64)
    positions[sorted(range(num_examples), key=hashes.__getitem__)] = np.arange(num_examples)
    return positions


@functools.lru_cache(maxsize=8)
def _load_arrays(dataset: str, split: str, folder: str, splits: str = "tfds"):
    import tensorflow_datasets as tfds  # imported lazily: it takes seconds

    builder = tfds.builder(dataset, data_dir=folder)
    _check_digit_dataset(dataset, builder.info)
    num_train = builder.info.splits["train"].num_examples
    source = tfds_split(split, num_train) if splits == "tfds" else ("test" if split == "test" else "train")
    with cpp_logs_filtered():  # the first tfrecord read logs a buffer size from C++
        images, labels = tfds.as_numpy(builder.as_dataset(split=source, as_supervised=True, batch_size=-1))
    if splits == "mnist-cluttered":  # the files' order, cut as download_mnist.lua cuts it
        order = file_order(source, len(labels))
        images, labels = images[order], labels[order]
        if split != "test":
            first_validation = num_train - MNIST_CLUTTERED_VALIDATION
            part = slice(0, first_validation) if split == "train" else slice(first_validation, None)
            images, labels = images[part], labels[part]
    images, labels = np.ascontiguousarray(images), np.ascontiguousarray(labels)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _check_digit_dataset(dataset: str, info) -> None:
    image, label = (info.features[key] for key in info.supervised_keys)
    if tuple(image.shape) != (DIGIT_SIZE, DIGIT_SIZE, 1) or image.np_dtype != np.uint8:
        raise ValueError(f"{dataset} has {image.np_dtype} images of shape {image.shape}; mnist_loc needs uint8 [28, 28, 1]")
    if not hasattr(label, "names") or label.num_classes < 2:
        raise ValueError(f"{dataset} has no class labels; mnist_loc needs an image-classification dataset")
    if set(info.splits) < {"train", "test"}:
        raise ValueError(f"{dataset} needs a train and a test split, has {sorted(info.splits)}")


@dataclass(frozen=True)
class Digits:
    """Where a task's digits live, found (or downloaded) once: give it to
    :func:`make_dataset` and :func:`canvases_at` so nothing searches again.

    ``dataset`` and ``splits`` as in :class:`~mnist_loc.task.Task`; ``folder`` the tfds
    folder that holds the dataset prepared; ``class_names`` in label order.
    """

    dataset: str
    splits: str
    folder: str
    class_names: tuple

    @classmethod
    def find(cls, task=None, data_dir=None, *, download: bool = True) -> "Digits":
        """The digits of ``task`` (a Task or a name in TASKS; default the course task).

        Searched in ``data_dir``, ``$TFDS_DATA_DIR``, ``~/tensorflow_datasets``; if none
        holds the dataset prepared it is downloaded once into the first (MNIST: about
        11 MiB), unless ``download=False``. Raises :class:`DataNotFoundError` saying what
        to do (offline that takes seconds), ValueError for a dataset that is not 28x28x1
        uint8 with class labels.
        """
        import tensorflow_datasets as tfds

        task = get_task(task)
        folder = prepared_dir(task.dataset, data_dir, download=download)
        info = tfds.builder(task.dataset, data_dir=folder).info
        _check_digit_dataset(task.dataset, info)
        names = tuple(info.features[info.supervised_keys[1]].names)
        return cls(task.dataset, task.splits, folder, names)

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` of one split: read-only uint8 ``[N, 28, 28, 1]`` and int64
        ``[N]``, in the split's order (cached per process)."""
        return _load_arrays(self.dataset, _check_split(split), self.folder, self.splits)

    def check(self, task: Task) -> None:
        """Raise unless these are ``task``'s digits (same dataset and splits)."""
        if (task.dataset, task.splits) != (self.dataset, self.splits):
            raise ValueError(
                f"these digits are {self.dataset} with {self.splits} splits, the task needs {task.dataset} with {task.splits} splits"
            )


def _digits_for(task: Task, digits, data_dir, download) -> Digits:
    if digits is None:
        return Digits.find(task, data_dir, download=download)
    digits.check(task)
    return digits


def load_digit_arrays(split: str, data_dir=None, *, download: bool = True, task=None) -> tuple[np.ndarray, np.ndarray]:
    """One split of a task's digits as read-only numpy arrays, cached per process.

    Returns ``(images, labels)``: uint8 ``[N, 28, 28, 1]`` and int64 ``[N]``. With the
    course task's ``splits="tfds"``, ``"train"`` is tfds' train split but its last
    twelfth (MNIST: 55,000), ``"validation"`` that twelfth (5,000), ``"test"`` tfds'
    test split; with ``splits="mnist-cluttered"``, MNIST's file order cut 50,000 /
    10,000 / 10,000. Where the data is found: :meth:`Digits.find`.
    """
    return Digits.find(task, data_dir, download=download).split(_check_split(split))


def class_names(task=None, data_dir=None, *, download: bool = True) -> list[str]:
    """The class names of a task's dataset, in label order (MNIST: ``"0"`` ... ``"9"``)."""
    return list(Digits.find(task, data_dir, download=download).class_names)


def load_digits(split: str, data_dir=None, *, download: bool = True, task=None) -> tf.data.Dataset:
    """A split as a ``tf.data.Dataset`` of ``(image, label)``: uint8 ``[28, 28, 1]``, int64 ``[]``."""
    return tf.data.Dataset.from_tensor_slices(load_digit_arrays(split, data_dir, download=download, task=task))


INK_THRESHOLD = 0.1  # a canvas pixel is ink at >= 10% of full intensity (25.5 of 255)


def place_digits(digits, offsets, canvas_size: int = 75, sizes=None, box: str = "patch"):
    """Paste each digit, resized to ``sizes`` px, on a black canvas at its offset.

    Args:
      digits: uint8 ``[B, 28, 28, 1]`` (or ``[B, 28, 28]``) digits, 0..255.
      offsets: int ``[B, 2]`` top-left ``(x, y)`` of each pasted patch.
      canvas_size: ``S``.
      sizes: int ``[B]`` side ``s`` of each pasted patch, in ``[1, S]``; default 28
        (no resizing). Area resampling, see the module doc.
      box: ``"patch"`` or ``"ink"`` (see the module doc).

    Returns:
      ``(canvases, boxes)``: float32 ``[B, S, S, 1]`` in [0, 1] (at ``s = 28`` exactly
      digit/255 inside the patch), 0 outside the patch; float32 ``[B, 4]`` boxes
      ``[xmin, ymin, xmax, ymax] / S``.

    Raises ``tf.errors.InvalidArgumentError`` if an offset is negative or puts the
    patch outside the canvas.
    """
    size = check_canvas_size(canvas_size)
    if box not in BOX_DEFINITIONS:
        raise ValueError(f"box must be one of {BOX_DEFINITIONS}, got {box!r}")
    offsets = tf.cast(offsets, tf.int32)
    sizes = tf.fill([tf.shape(offsets)[0]], DIGIT_SIZE) if sizes is None else tf.cast(sizes, tf.int32)
    tf.debugging.assert_positive(sizes, message="digit sizes must be >= 1")
    tf.debugging.assert_non_negative(offsets, message="digit offsets must be >= 0")
    tf.debugging.assert_less_equal(
        offsets + sizes[:, None], size, message="digit offset puts the digit outside the canvas"
    )
    return _paste(digits, offsets, sizes, size, box)


def resize_weights(starts, sizes, canvas_size: int):
    """Area-resampling weights: ``[B, 28, S]`` float32, how much digit column (or row) ``c``
    contributes to canvas column ``X`` when the digit is resized to ``sizes[b]`` px and
    its patch starts at canvas column ``starts[b]``.

    Canvas pixel ``X`` covers the digit interval ``[u, u + 1) * 28 / s`` with
    ``u = X - start``; the weight is the part of digit pixel ``[c, c + 1)`` inside it,
    divided by the interval's length, so each column inside the patch sums to 1. At
    ``s = 28`` the weights are exactly 0 or 1: a pure shift.
    """
    stretch = float(DIGIT_SIZE) / tf.cast(sizes, tf.float32)[:, None, None]  # digit px per canvas px
    u = tf.cast(tf.range(canvas_size)[None, None, :] - starts[:, None, None], tf.float32)
    c = tf.cast(tf.range(DIGIT_SIZE), tf.float32)[None, :, None]
    overlap = tf.minimum(c + 1.0, (u + 1.0) * stretch) - tf.maximum(c, u * stretch)
    return tf.maximum(overlap, 0.0) / stretch


def _paste(digits, offsets, sizes, size: int, box: str = "patch"):
    """:func:`place_digits` without the checks, for int32 offsets and sizes drawn in range.

    The input pipeline calls this: its draws are in range by construction, and assert
    ops in a ``map`` would only add work to every batch.
    """
    pixels = tf.cast(tf.reshape(digits, [-1, DIGIT_SIZE, DIGIT_SIZE]), tf.float32) / 255.0
    # Two batched matmuls paste (and resize) a whole batch, about 4x cheaper than a
    # scatter; unresized, every canvas pixel is one digit pixel times 1.0 plus zeros: exact.
    columns = resize_weights(offsets[:, 0], sizes, size)  # [B, 28, S]
    rows = resize_weights(offsets[:, 1], sizes, size)  # [B, 28, S]
    canvases = tf.matmul(rows, tf.matmul(pixels, columns), transpose_a=True)
    canvases = tf.minimum(canvases, 1.0)  # resampled sums of weights can round a hair above 1
    xy = tf.cast(offsets, tf.float32)
    patch = tf.concat([xy, xy + tf.cast(sizes, tf.float32)[:, None]], axis=-1)
    boxes = ink_boxes(canvases, patch) if box == "ink" else patch
    return canvases[..., None], boxes / float(size)


def ink_boxes(canvases, fallback):
    """Tightest ``[B, 4]`` pixel-edge boxes around the pixels ``>= INK_THRESHOLD`` of
    ``[B, S, S]`` canvases (not normalized); ``fallback`` where a canvas has no such pixel."""
    size = tf.shape(canvases)[-1]
    ink = canvases >= INK_THRESHOLD
    columns = tf.reduce_any(ink, axis=1)  # [B, S]
    rows = tf.reduce_any(ink, axis=2)

    def edges(mask):
        first = tf.argmax(tf.cast(mask, tf.int32), axis=1, output_type=tf.int32)
        last = size - tf.argmax(tf.cast(tf.reverse(mask, [1]), tf.int32), axis=1, output_type=tf.int32)
        return tf.cast(first, tf.float32), tf.cast(last, tf.float32)

    x0, x1 = edges(columns)
    y0, y1 = edges(rows)
    has_ink = tf.reduce_any(columns, axis=1, keepdims=True)
    return tf.where(has_ink, tf.stack([x0, y0, x1, y1], axis=-1), fallback)


def _add_clutter(canvases, offsets, sizes, fragments_from, crops, positions, size: int, piece: int = 8, overlap: bool = False):
    """Add ``k`` ``piece x piece`` distractors per canvas by one of the two rules of
    :mod:`mnist_loc.task`.

    ``canvases`` float32 ``[B, S, S, 1]`` hold the target alone; ``fragments_from`` uint8
    ``[B, k, 28, 28]`` source digits, ``crops`` int32 ``[B, k, 2]`` top-left ``(x, y)`` of
    each crop in its digit, ``positions`` int32 ``[B, k, 2]`` where it goes on the canvas.
    ``overlap=False``: pieces are cut off at the target's patch, added, clipped to [0, 1].
    ``overlap=True`` (mnist_cluttered.lua): pieces summed and clipped at 1, then the
    target added and the canvas clipped to [0, 1]. Crop and paste are one-hot matmuls.
    """
    span = tf.range(piece)
    pick_rows = tf.one_hot(crops[..., 1:2] + span, DIGIT_SIZE)  # [B, k, piece, 28]
    pick_columns = tf.one_hot(crops[..., 0:1] + span, DIGIT_SIZE)
    fragments = tf.matmul(pick_rows, tf.matmul(tf.cast(fragments_from, tf.float32) / 255.0, pick_columns, transpose_b=True))
    to_rows = tf.one_hot(positions[..., 1:2] + span, size)  # [B, k, piece, S]
    to_columns = tf.one_hot(positions[..., 0:1] + span, size)
    placed = tf.matmul(fragments, to_columns)  # [B, k, piece, S]
    batch = tf.shape(placed)[0]
    # Sum over the k fragments inside one matmul: contract over (fragment, row).
    clutter = tf.matmul(
        tf.reshape(to_rows, [batch, -1, size]), tf.reshape(placed, [batch, -1, size]), transpose_a=True
    )[..., None]  # [B, S, S, 1]
    if overlap:
        return tf.clip_by_value(tf.minimum(clutter, 1.0) + canvases, 0.0, 1.0)
    canvas_index = tf.range(size)[None, :]
    inside_x = (canvas_index >= offsets[:, 0:1]) & (canvas_index < offsets[:, 0:1] + sizes[:, None])
    inside_y = (canvas_index >= offsets[:, 1:2]) & (canvas_index < offsets[:, 1:2] + sizes[:, None])
    outside = 1.0 - tf.cast(inside_y[:, :, None] & inside_x[:, None, :], tf.float32)
    return tf.clip_by_value(canvases + clutter * outside[..., None], 0.0, 1.0)


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


def draw_layout(num_examples: int, key, task: Task = Task()) -> dict:
    """Every random choice of one pass of a split, row ``i`` for example ``i``.

    Returns int32 tensors: ``offsets [N, 2]`` and ``sizes [N]`` of the target patch
    (offsets uniform in ``0 .. S - s``, both ends included); with ``task.clutter = k``:
    ``sources [N, k]`` (the digit each piece is cut from: another example of the split,
    or with ``clutter_overlap`` any example, drawn with replacement), ``crops [N, k, 2]``
    (uniform in ``0 .. 28 - piece``) and ``positions [N, k, 2]`` (uniform in
    ``0 .. S - piece``). At scale ``(1, 1)`` the offsets are :func:`random_offsets`'.
    """
    fold = tf.random.experimental.stateless_fold_in
    canvas_size, (lo, hi), clutter, piece = task.canvas_size, task.scale, task.clutter, task.clutter_size
    if (lo, hi) == (1.0, 1.0):
        sizes = tf.fill([num_examples], DIGIT_SIZE)
        offsets = random_offsets(num_examples, canvas_size, key)
    else:
        log_scale = tf.random.stateless_uniform([num_examples], seed=fold(key, 2), minval=np.log(lo), maxval=np.log(hi))
        smallest, largest = round(DIGIT_SIZE * lo), min(round(DIGIT_SIZE * hi), canvas_size)
        sizes = tf.clip_by_value(tf.cast(tf.round(DIGIT_SIZE * tf.exp(log_scale)), tf.int32), smallest, largest)
        room = tf.cast(canvas_size - sizes + 1, tf.float32)[:, None]  # offsets 0 .. S - s
        unit = tf.random.stateless_uniform([num_examples, 2], seed=fold(key, 3))
        offsets = tf.minimum(tf.cast(tf.floor(unit * room), tf.int32), canvas_size - sizes[:, None])
    layout = {"offsets": offsets, "sizes": sizes}
    if clutter:
        if task.clutter_overlap:
            layout["sources"] = tf.random.stateless_uniform([num_examples, clutter], seed=fold(key, 7), maxval=num_examples, dtype=tf.int32)
        else:
            if num_examples < 2:
                raise ValueError("clutter needs at least 2 digits in the split (fragments come from other digits)")
            others = tf.random.stateless_uniform([num_examples, clutter], seed=fold(key, 4), maxval=num_examples - 1, dtype=tf.int32)
            own = tf.range(num_examples)[:, None]
            layout["sources"] = others + tf.cast(others >= own, tf.int32)  # skip the example itself
        layout["crops"] = tf.random.stateless_uniform(
            [num_examples, clutter, 2], seed=fold(key, 5), maxval=DIGIT_SIZE - piece + 1, dtype=tf.int32
        )
        layout["positions"] = tf.random.stateless_uniform(
            [num_examples, clutter, 2], seed=fold(key, 6), maxval=canvas_size - piece + 1, dtype=tf.int32
        )
    return layout


def _assemble(digits, indices, layout, task: Task):
    """Canvases ``[K, S, S, 1]`` and boxes ``[K, 4]`` of examples ``indices`` of the split
    ``digits`` (uint8 ``[N, 28, 28, 1]``), placed by ``layout`` (their rows of :func:`draw_layout`)."""
    canvases, boxes = _paste(tf.gather(digits, indices), layout["offsets"], layout["sizes"], task.canvas_size, task.box)
    if "sources" in layout:
        canvases = _add_clutter(
            canvases, layout["offsets"], layout["sizes"], tf.gather(digits, layout["sources"])[..., 0],
            layout["crops"], layout["positions"], task.canvas_size, task.clutter_size, task.clutter_overlap,
        )
    return canvases, boxes


def make_canvas_dataset(
    images,
    labels,
    *,
    task=None,
    batch_size: int = 64,
    num_classes: int = 10,
    seed: int = 0,
    training: bool = False,
    split_code: int = 0,
    first_step: int = 0,
    num_parallel_calls=tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Canvas batches from in-memory digits; :func:`make_dataset` without tfds.

    Args:
      images: uint8 ``[N, 28, 28, 1]`` digits.
      labels: int ``[N]`` class ids in ``[0, num_classes)``.
      task: what the canvases are (a :class:`~mnist_loc.task.Task` or a name in
        ``TASKS``; default the course task). Its dataset and splits are not used here.
      training: if False, one pass in order (canvas ``i`` holds digit ``i``) with one
        fixed placement per seed and a smaller last batch. If True, an endless stream
        of shuffled passes of ``N // batch_size`` full batches; pass ``p`` is shuffled
        and placed with ``(seed, p)``. ``first_step`` skips that many batches of the
        stream for free (used to resume training mid-stream).
      split_code: keeps different splits' draws independent under one seed.
      num_parallel_calls: parallelism of the placement; it never changes the output.

    Returns:
      ``tf.data.Dataset`` of ``(images, targets)``: float32 ``[B, S, S, 1]`` canvases
      and ``{"classification": float32 one-hot [B, num_classes], "bounding_box":
      float32 [B, 4]}`` with boxes ``[xmin, ymin, xmax, ymax] / S``.
    """
    task = get_task(task)
    batch_size = check_positive_int(batch_size, "batch_size")
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
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
    classes = tf.one_hot(tf.constant(labels), num_classes, dtype=tf.float32)

    # Plain TensorFlow ops, nothing for AutoGraph to convert; converting a closure made
    # again for another dataset warns of a "closure mismatch".
    @tf.autograph.experimental.do_not_convert
    def assemble(indices, layout):
        canvases, boxes = _assemble(digits, indices, layout, task)
        return canvases, {"classification": tf.gather(classes, indices), "bounding_box": boxes}

    def layout_of_pass(pass_index):
        key = _stream_key(seed, split_code, pass_index)
        return key, draw_layout(num_examples, key, task)

    if not training:
        _, layout = layout_of_pass(0)
        ds = tf.data.Dataset.from_tensor_slices((tf.range(num_examples), layout))
        ds = ds.batch(batch_size)
    else:
        steps_per_pass = num_examples // batch_size
        if steps_per_pass == 0:
            raise ValueError(
                f"batch_size {batch_size} is larger than the {num_examples} training digits"
            )
        first_step = check_positive_int(first_step, "first_step", minimum=0)
        kept = steps_per_pass * batch_size

        def one_pass(pass_index):
            key, layout = layout_of_pass(pass_index)
            order = tf.argsort(
                tf.random.stateless_uniform([num_examples], seed=tf.random.experimental.stateless_fold_in(key, 1))
            )[:kept]
            def batches(per_example):  # this pass's order, cut into batches
                return tf.reshape(tf.gather(per_example, order), [steps_per_pass, batch_size, *per_example.shape[1:]])

            indices = tf.reshape(order, [steps_per_pass, batch_size])
            return tf.data.Dataset.from_tensor_slices((indices, tf.nest.map_structure(batches, layout)))

        first_pass = first_step // steps_per_pass
        ds = tf.data.Dataset.counter(first_pass).flat_map(one_pass)
        ds = ds.skip(first_step - first_pass * steps_per_pass)
    ds = ds.map(assemble, num_parallel_calls=num_parallel_calls, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_dataset(
    split: str,
    *,
    task=None,
    batch_size: int = 64,
    seed: int = 0,
    training=None,
    first_step: int = 0,
    data_dir=None,
    download: bool = True,
    digits: Digits | None = None,
) -> tf.data.Dataset:
    """Batches of a task's canvases, with class and box targets.

    Args:
      split: ``"train"``, ``"validation"`` or ``"test"`` (cut by ``task.splits``).
      task: what the canvases are: a :class:`~mnist_loc.task.Task` or a name in
        ``TASKS`` (default ``"course"``: 28 px MNIST digits on 75x75, patch boxes).
      batch_size: examples per batch (> 0).
      seed: selects the placement (and, in training, the shuffle). The same seed
        always gives byte-identical canvases and boxes.
      training: default True for ``"train"``, else False. See
        :func:`make_canvas_dataset`: training is an endless stream of reshuffled,
        re-placed passes (use ``steps_per_epoch`` or ``take``); evaluation is one
        pass in the split's order with one fixed placement per seed.
      first_step: training only: start the stream at this batch (resume).
      data_dir, download: where the digits are found or downloaded to
        (:meth:`Digits.find`); or pass ``digits`` found once by :meth:`Digits.find`.

    Returns:
      ``tf.data.Dataset`` of ``(images, targets)``: images float32 ``[B, S, S, 1]`` in
      [0, 1]; targets ``{"classification": float32 one-hot [B, C], "bounding_box":
      float32 [B, 4]}``, boxes ``[xmin, ymin, xmax, ymax] / S``.
    """
    _check_split(split)
    task = get_task(task)
    batch_size = check_positive_int(batch_size, "batch_size")
    if training is None:
        training = split == "train"
    digits = _digits_for(task, digits, data_dir, download)
    images, labels = digits.split(split)
    return make_canvas_dataset(
        images,
        labels,
        task=task,
        batch_size=batch_size,
        num_classes=len(digits.class_names),
        seed=seed,
        training=bool(training),
        split_code=_SPLIT_CODES[split],
        first_step=first_step,
    )


def canvases_at(split: str, indices, *, task=None, seed: int = 0, data_dir=None, download: bool = True, digits: Digits | None = None):
    """The fixed evaluation canvases of ``split`` at ``indices``, without building the rest.

    Same canvases and targets as example ``indices[i]`` of ``make_dataset(split,
    training=False, task=task, seed=seed)``; ``data_dir``, ``download`` and ``digits``
    as there.

    Returns ``(images float32 [K, S, S, 1], labels int64 [K], boxes float32 [K, 4])``.
    """
    task = get_task(task)
    _check_split(split)
    images, labels = _digits_for(task, digits, data_dir, download).split(split)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= len(images)):
        raise ValueError(f"indices must lie in [0, {len(images)}) for split {split!r}")
    layout = draw_layout(len(images), _stream_key(int(seed), _SPLIT_CODES[split], 0), task)
    layout = tf.nest.map_structure(lambda t: tf.gather(t, indices), layout)
    canvases, boxes = _assemble(images, tf.constant(indices, tf.int32), layout, task)
    return canvases.numpy(), labels[indices], boxes.numpy()
