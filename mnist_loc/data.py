"""The digits a run trains on, held in memory, and the batches of canvases drawn from them.

:class:`Digits` is one dataset's three splits as numpy arrays, checked once when it is made:
read from tensorflow-datasets (:meth:`Digits.find`) or built from your own arrays
(:meth:`Digits.from_arrays`). :func:`make_dataset` and :func:`canvases_at` draw a task's
canvases from them (:mod:`mnist_loc.placement`). Validation and test are one fixed draw per
seed; training is an endless stream of passes, pass ``p`` with its own shuffle and placement.
Boxes are ``[xmin, ymin, xmax, ymax]`` normalized to the canvas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .placement import assemble, draw_layout, draw_scenes, scene_counts, stream_key
from .task import DIGIT_SIZE, Task, check_positive_int, get_task
from .tfds_source import SPLITS

# Distinct stream codes keep the splits' draws independent under the same seed.
_SPLIT_CODES = {"train": 1, "validation": 2, "test": 3}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {sorted(SPLITS)}")
    return split


@dataclass(frozen=True, eq=False)
class Digits:
    """A dataset's ``"train"``, ``"validation"`` and ``"test"`` digits, in memory.

    ``class_names``: tuple of str, in label order. ``arrays``: ``{split: (images, labels)}``
    with images uint8 ``[N, 28, 28, 1]`` (0..255, light digit on black) and labels int64
    ``[N]`` in ``[0, len(class_names))``, read-only. ``source``: ``(dataset, split rule)`` of
    a :class:`~mnist_loc.task.Task` when read from tfds, None for your own arrays (then any
    task may use them). Checked once here; everything downstream trusts it.
    """

    class_names: tuple
    arrays: dict
    source: tuple | None = None

    def __post_init__(self):
        names = tuple(str(n) for n in self.class_names)
        if len(names) < 2:
            raise ValueError(f"digits need at least 2 classes, got class_names {names}")
        if set(self.arrays) != set(SPLITS):
            raise ValueError(f"digits need the splits {SPLITS}, got {sorted(self.arrays)}")
        checked = {}
        for split in SPLITS:
            images, labels = (np.asarray(a) for a in self.arrays[split])
            if images.ndim == 3:
                images = images[..., None]
            if images.dtype != np.uint8 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE, 1) or not len(images):
                raise ValueError(f"{split} images must be uint8 [N>0, 28, 28, 1], got {images.dtype} {images.shape}")
            if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
                raise ValueError(f"{split} labels must be integers of shape [{len(images)}], got {labels.dtype} {labels.shape}")
            if labels.min() < 0 or labels.max() >= len(names):
                raise ValueError(f"{split} labels must lie in [0, {len(names)}) for {len(names)} classes")
            images, labels = np.ascontiguousarray(images), labels.astype(np.int64)
            images.setflags(write=False)
            labels.setflags(write=False)
            checked[split] = (images, labels)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "arrays", checked)

    @classmethod
    def find(cls, task=None, data_dir=None, *, download: bool = True) -> "Digits":
        """The digits of ``task`` (a Task or a name in TASKS; default the course task), read
        from tensorflow-datasets: searched in ``data_dir``, ``$TFDS_DATA_DIR``,
        ``~/tensorflow_datasets``, downloaded once into the first if none holds them (unless
        ``download=False``), cut by ``task.splits``. See :mod:`mnist_loc.tfds_source`."""
        from .tfds_source import read_splits

        task = get_task(task)
        names, arrays = read_splits(task.dataset, task.splits, data_dir, download=download)
        return cls(names, arrays, (task.dataset, task.splits))

    @classmethod
    def from_arrays(cls, train, validation, test, class_names=None) -> "Digits":
        """Your own digits: each split an ``(images, labels)`` pair, images uint8 ``[N, 28, 28]``
        or ``[N, 28, 28, 1]``, integer labels ``[N]``; ``class_names`` default ``"0"``, ``"1"``, ...
        up to the largest label."""
        if class_names is None:
            top = max(int(np.max(labels)) for _, labels in (train, validation, test))
            class_names = [str(c) for c in range(max(top + 1, 2))]
        return cls(tuple(class_names), {"train": train, "validation": validation, "test": test})

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(images uint8 [N, 28, 28, 1], labels int64 [N])`` of one split."""
        return self.arrays[_check_split(split)]

    def check(self, task: Task) -> None:
        """Raise unless these digits may make ``task``'s canvases (same dataset and splits)."""
        if self.source is not None and self.source != (task.dataset, task.splits):
            raise ValueError(f"these digits are {self.source[0]} with {self.source[1]} splits, "
                             f"the task needs {task.dataset} with {task.splits} splits")


PIPELINE_RAM = 32 * 2**20  # bytes tf.data's autotuner may buffer ahead (its default: half the machine's RAM)


def _bounded(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` with its autotuned buffers held to :data:`PIPELINE_RAM`: a few batches ahead keep two
    cores busy; more only holds memory. Buffering never changes what the stream yields."""
    options = tf.data.Options()
    options.autotune.ram_budget = PIPELINE_RAM
    return ds.with_options(options)


def _canvas_batches(images, labels, num_classes, task, batch_size, seed, split_code, training, first_step=0,
                    num_parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
    """The engine of :func:`make_dataset` on checked arrays; ``num_parallel_calls`` never changes the output."""
    num_examples = len(images)
    digits, classes = tf.constant(images), tf.one_hot(tf.constant(labels), num_classes, dtype=tf.float32)

    # Plain TensorFlow ops, nothing for AutoGraph to convert; converting a closure made
    # again for another dataset warns of a "closure mismatch".
    @tf.autograph.experimental.do_not_convert
    def to_canvases(indices, layout):
        canvases, boxes = assemble(digits, indices, layout, task)
        return canvases, {"classification": tf.gather(classes, indices), "bounding_box": boxes}

    def layout_of_pass(pass_index):
        key = stream_key(seed, split_code, pass_index)
        return key, draw_layout(num_examples, key, task)

    if not training:
        ds = tf.data.Dataset.from_tensor_slices((tf.range(num_examples), layout_of_pass(0)[1])).batch(batch_size)
    else:
        steps_per_pass = num_examples // batch_size
        if steps_per_pass == 0:
            raise ValueError(f"batch_size {batch_size} is larger than the {num_examples} training digits")

        def one_pass(pass_index):  # this pass's shuffle, cut into full batches
            key, layout = layout_of_pass(pass_index)
            shuffle = tf.random.stateless_uniform([num_examples], seed=tf.random.experimental.stateless_fold_in(key, 1))
            order = tf.argsort(shuffle)[: steps_per_pass * batch_size]
            batches = lambda a: tf.reshape(tf.gather(a, order), [steps_per_pass, batch_size, *a.shape[1:]])  # noqa: E731
            return tf.data.Dataset.from_tensor_slices((batches(tf.range(num_examples)), tf.nest.map_structure(batches, layout)))

        first_pass = first_step // steps_per_pass
        ds = tf.data.Dataset.counter(first_pass).flat_map(one_pass).skip(first_step - first_pass * steps_per_pass)
    ds = ds.map(to_canvases, num_parallel_calls=num_parallel_calls, deterministic=True)
    return _bounded(ds.prefetch(tf.data.AUTOTUNE))


def _scene_batches(images, labels, task, batch_size, seed, split_code, training, first_step=0,
                   num_parallel_calls=1) -> tf.data.Dataset:
    """:func:`_canvas_batches` for a detection task: canvases of several digits (:func:`~mnist_loc.placement.draw_scenes`).

    One batch is drawn at a time: dense scenes drawn in parallel raised the peak memory of
    training and scoring by 130-700 MB (docs/testbed.md, "Memory by phase"), and one thread
    draws a batch several times faster than a step trains on it."""
    pass_size = task.canvases[split_code - 1]
    digits, digit_labels = tf.constant(images), tf.constant(labels)

    @tf.autograph.experimental.do_not_convert
    def to_scenes(indices, counts, key):
        canvases, found, boxes = draw_scenes(digits, digit_labels, indices, counts, key, task, pass_size)
        return canvases, {"labels": found, "boxes": boxes}

    def one_pass(pass_index):  # canvases are independent draws: no shuffle needed
        key = stream_key(seed, split_code, pass_index)
        counts = scene_counts(pass_size, tf.random.experimental.stateless_fold_in(key, 0), task)
        batches = tf.data.Dataset.from_tensor_slices((tf.range(pass_size), counts)).batch(batch_size, drop_remainder=training)
        return batches.map(lambda indices, counts: (indices, counts, key))

    if not training:
        ds = one_pass(tf.constant(0, tf.int64))
    else:
        steps_per_pass = pass_size // batch_size
        if steps_per_pass == 0:
            raise ValueError(f"batch_size {batch_size} is larger than the {pass_size} training canvases of a pass")
        first_pass = first_step // steps_per_pass
        ds = tf.data.Dataset.counter(first_pass).flat_map(one_pass).skip(first_step - first_pass * steps_per_pass)
    ds = ds.map(to_scenes, num_parallel_calls=num_parallel_calls, deterministic=True)
    return _bounded(ds.prefetch(tf.data.AUTOTUNE))


SCENE_PIXELS = 64 * 300 * 300  # canvas pixels drawn at once for evaluation and canvases_at (64 canvases of 300 px)


def scene_batch_size(task: Task, batch_size: int = 500) -> int:
    """``batch_size`` capped so that one batch of ``task``'s canvases holds at most :data:`SCENE_PIXELS` pixels."""
    return max(1, min(int(batch_size), SCENE_PIXELS // task.canvas_size**2))


def make_dataset(split: str, digits: Digits, *, task=None, batch_size: int = 64, seed: int = 0, training=None,
                 first_step: int = 0) -> tf.data.Dataset:
    """Batches of a task's canvases drawn from ``digits``' ``split`` (``"train"``, ``"validation"``,
    ``"test"``) with their targets; ``task`` a Task or a name in ``TASKS`` (default ``"course"``).

    ``seed`` selects placement and shuffle: the same seed gives byte-identical canvases.
    ``training`` (default: ``split == "train"``): an endless stream of reshuffled, re-placed passes
    of full batches from batch ``first_step`` (resume); else one pass in the split's order with
    one fixed placement and a smaller last batch.

    Yields ``(images float32 [B, S, S, 1] in [0, 1], targets)``, targets ``{"classification":
    float32 one-hot [B, C], "bounding_box": float32 [B, 4]}``; for a detection task ``{"labels":
    int32 [B, K] (-1: no digit), "boxes": float32 [B, K, 4]}`` padded to ``K = task.max_count``,
    a pass holding ``task.canvases`` canvases. Boxes ``[xmin, ymin, xmax, ymax]`` normalized.
    """
    task = get_task(task)
    digits.check(task)
    images, labels = digits.split(split)
    if task.kind == "detection":
        return _scene_batches(
            images, labels, task, check_positive_int(batch_size, "batch_size"), int(seed), _SPLIT_CODES[split],
            split == "train" if training is None else bool(training), check_positive_int(first_step, "first_step", minimum=0),
        )
    return _canvas_batches(
        images, labels, digits.num_classes, task, check_positive_int(batch_size, "batch_size"), int(seed),
        _SPLIT_CODES[split], split == "train" if training is None else bool(training),
        check_positive_int(first_step, "first_step", minimum=0),
    )


def num_canvases(task: Task, digits: Digits, split: str) -> int:
    """How many canvases a pass of ``split`` holds: ``task.canvases``' entry for a detection task,
    else one per digit of the split."""
    if task.kind == "detection":
        return task.canvases[_SPLIT_CODES[_check_split(split)] - 1]
    return len(digits.split(split)[1])


def canvases_at(split: str, indices, *, digits: Digits, task=None, seed: int = 0):
    """The fixed evaluation canvases of ``split`` at ``indices``, without drawing the rest:
    example ``indices[i]`` of ``make_dataset(split, digits, task=task, seed=seed, training=False)``.

    Returns ``(images float32 [N, S, S, 1], labels int64 [N], boxes float32 [N, 4])``; for a
    detection task ``(images, labels int64 [N, K] with -1 where there is no digit, boxes
    float32 [N, K, 4])``, padded to ``K = task.max_count``, digits in drawing order.
    """
    task = get_task(task)
    digits.check(task)
    images, labels = digits.split(split)
    count = num_canvases(task, digits, split)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= count):
        raise ValueError(f"indices must lie in [0, {count}) for split {split!r}")
    if task.kind == "detection":
        key = stream_key(int(seed), _SPLIT_CODES[split], 0)
        counts = tf.gather(scene_counts(count, tf.random.experimental.stateless_fold_in(key, 0), task), indices)
        parts = []
        step = scene_batch_size(task)
        for start in range(0, max(len(indices), 1), step):  # a few canvases at a time: a dense scene pastes K full-size digits
            chunk = tf.constant(indices[start: start + step], tf.int32)
            parts.append([t.numpy() for t in draw_scenes(images, labels, chunk, counts[start: start + step], key, task, count)])
        canvases, found, boxes = (np.concatenate(p) for p in zip(*parts))
        return canvases, found.astype(np.int64), boxes
    layout = draw_layout(len(images), stream_key(int(seed), _SPLIT_CODES[split], 0), task)
    layout = tf.nest.map_structure(lambda t: tf.gather(t, indices), layout)
    canvases, boxes = assemble(images, tf.constant(indices, tf.int32), layout, task)
    return canvases.numpy(), labels[indices], boxes.numpy()
