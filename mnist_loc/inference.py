"""What both kinds of answer share: canvases checked for a model, and one cached forward pass.

Below the two kinds of answer, :mod:`mnist_loc.localization` (one digit per canvas) and
:mod:`mnist_loc.detection` (several), so neither takes a private name of the other. :func:`output_shapes` says what a model answers
without running it: its outputs' names and shapes, traced symbolically.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

PIXELS_PER_BATCH = 500 * 50 * 50  # canvas pixels per forward pass: 500 canvases of 50 px, 13 of 300 px


class ModelOutputError(ValueError):
    """A model's outputs do not fit the task: found before any training step."""


def to_unit_float(pixels, name: str = "images") -> np.ndarray:
    """Pixels as float32 in [0, 1]: uint8 is scaled by 1/255, floats must already be in range.

    Raises TypeError for other dtypes and ValueError for an empty array, NaN/inf or
    out-of-range values, each message starting with ``name``.
    """
    array = np.asarray(pixels)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    else:
        raise TypeError(f"{name} must be uint8 or float, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name}: empty array (shape {array.shape})")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: NaN or infinite pixels")
    if array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(f"{name}: float pixels must lie in [0, 1], got range [{array.min():g}, {array.max():g}]")
    return array


def check_images(images, canvas_size: int) -> np.ndarray:
    """Return canvases as float32 ``[N, S, S, 1]`` in [0, 1], or raise naming the problem.

    Accepts ``[S, S]``, ``[S, S, 1]``, ``[N, S, S]`` or ``[N, S, S, 1]``; uint8 (0..255,
    scaled by 1/255) or floating point in [0, 1]. Raises TypeError for other dtypes,
    ValueError for empty input, a wrong rank, size or channel count, NaN/inf pixels
    or float values outside [0, 1].
    """
    array = to_unit_float(images, "images")
    if array.ndim == 2:
        array = array[None, :, :, None]
    elif array.ndim == 3:
        # [H, W, C] when the first two sides match and C looks like channels, else [N, H, W].
        is_single = array.shape[0] == array.shape[1] and array.shape[2] in (1, 3, 4)
        array = array[None] if is_single else array[..., None]
    elif array.ndim != 4:
        raise ValueError(f"images must have rank 2 to 4 ([N,] S, S[, 1]), got shape {array.shape}")
    if array.shape[-1] != 1:
        raise ValueError(f"images must have 1 channel (grayscale), got {array.shape[-1]} in shape {array.shape}")
    if array.shape[1:3] != (canvas_size, canvas_size):
        raise ValueError(
            f"images must be {canvas_size}x{canvas_size} canvases for this model, got {array.shape[1]}x{array.shape[2]}"
        )
    return array


def model_canvas_size(model: keras.Model) -> int | None:
    """The canvas side a model declares in its input (functional models), else None.

    Subclassed models declare none; then the canvases' own size is used.
    """
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, tuple) and len(shape) == 4 and isinstance(shape[1], int):
        return shape[1]
    return None


# Test-time augmentation: the canvas and four copies shifted 2 px right, left, down and up
# (zero-filled); class probabilities are averaged, boxes shifted back and averaged. Chosen on
# the validation canvases (README, "Time to quality"); it costs five forward passes.
TTA_SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))
TTA_DESCRIPTION = "test-time augmentation: mean of the canvas and 4 copies shifted by 2 px"


# One graph function per (model, tta), kept while the model lives: a fresh tf.function per
# call would be traced again every time (TensorFlow warns after five retracings).
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forward(model: keras.Model, tta: bool):
    """A graph function ``[B, S, S, 1] -> {"classification", "bounding_box"}``, averaged
    over the :data:`TTA_SHIFTS` views when ``tta``. Our own function rather than
    predict_on_batch, which under a MirroredStrategy returns every replica's copy."""
    functions = _FORWARDS.setdefault(model, {})
    if tta not in functions:
        functions[tta] = _make_forward(weakref.ref(model), tta)  # a weak reference, or the cache would keep the model
    return functions[tta]


def _make_forward(model_ref, tta: bool):
    if not tta:
        return tf.function(lambda x: model_ref()(x, training=False), autograph=False, reduce_retracing=True)
    margin = max(abs(v) for shift in TTA_SHIFTS for v in shift)

    def averaged(x):
        size = int(x.shape[1])
        offsets = tf.constant([[dx, dy, dx, dy] for dx, dy in TTA_SHIFTS], tf.float32) / size
        padded = tf.pad(tf.cast(x, tf.float32), [[0, 0], [margin, margin], [margin, margin], [0, 0]])
        # A view shifted by (dx, dy) reads the padded canvas from (margin - dy, margin - dx).
        views = [padded[:, margin - dy: margin - dy + size, margin - dx: margin - dx + size, :] for dx, dy in TTA_SHIFTS]
        out = model_ref()(tf.concat(views, 0), training=False)  # one pass over all views
        n = len(TTA_SHIFTS)
        probabilities = tf.reshape(out["classification"], (n, -1, out["classification"].shape[-1]))
        boxes = tf.reshape(out["bounding_box"], (n, -1, 4)) - offsets[:, None, :]
        return {"classification": tf.reduce_mean(probabilities, 0), "bounding_box": tf.reduce_mean(boxes, 0)}

    return tf.function(averaged, autograph=False, reduce_retracing=True)


def model_canvases(model: keras.Model, images, canvas_size: int | None = None) -> np.ndarray:
    """``images`` checked as canvases for ``model`` (:func:`check_images`): float32
    ``[N, S, S, 1]``, ``S`` being ``canvas_size``, else what the model declares, else the
    images' own side."""
    size = canvas_size or model_canvas_size(model)
    if size is None:
        shape = np.shape(images)
        size = shape[1] if len(shape) == 4 or (len(shape) == 3 and shape[0] != shape[1]) else shape[0]
    return check_images(images, int(size))


def output_shapes(model: keras.Model, canvas_size: int, batch: int | None = None):
    """``{output name: shape}`` of ``model`` on float32 ``[B, S, S, 1]`` canvases (``B`` =
    ``batch``), traced symbolically: no canvas goes through it. For a model whose output is not
    a dict, the output's type name. Raises :class:`ModelOutputError` for a model that cannot
    take such canvases."""
    try:
        spec = model.compute_output_spec(keras.KerasTensor((batch, canvas_size, canvas_size, 1), "float32"))
    except Exception as error:
        reason = " ".join(str(error).split())[:300]
        raise ModelOutputError(f"the model fails on float32 [B, {canvas_size}, {canvas_size}, 1] canvases ({type(error).__name__}: {reason})") from None
    if not isinstance(spec, dict):
        return type(spec).__name__
    return {name: tuple(value.shape) for name, value in spec.items()}


def model_kind(model: keras.Model, canvas_size: int) -> str:
    """``"detection"`` for a model with the detector's ``"detections"`` output
    (:mod:`mnist_loc.detector`), else ``"localization"``; from :func:`output_shapes` on the
    canvases the model declares (a functional model's input), else on ``canvas_size``."""
    shapes = output_shapes(model, model_canvas_size(model) or canvas_size)
    return "detection" if isinstance(shapes, dict) and "detections" in shapes else "localization"


def canvases_per_batch(canvas_size: int, batch_size: int = 500) -> int:
    """Canvases of side ``canvas_size`` a forward pass takes: at most ``batch_size`` and
    :data:`PIXELS_PER_BATCH` pixels, at least one."""
    return max(1, min(int(batch_size), PIXELS_PER_BATCH // (int(canvas_size) ** 2)))


def batch_slices(count: int, canvas_size: int, batch_size: int = 500):
    """``slice`` objects over ``count`` canvases, :func:`canvases_per_batch` at a time."""
    step = canvases_per_batch(canvas_size, batch_size)
    return [slice(i, i + step) for i in range(0, count, step)]
