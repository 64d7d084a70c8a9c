"""The detector: the course model's two heads, asked once per place instead of once per canvas.

An anchor-free dense head ("Objects as Points", Zhou et al. 2019): at each cell of a grid of
stride 2 or 4 a heatmap per class scores "a digit of class c is centred here" and a box head
gives that digit's distances to its four edges; a count head over the whole canvas rescores the
ranked peaks (:func:`decode`). The method: docs/testbed.md.

Output contract (any Keras model with it trains and evaluates like the package's own):
``{"detections": float32 [B, H, W, C + 4]}`` on float32 ``[B, S, S, 1]`` canvases, ``H = W =
ceil(S / s)`` for a stride ``s`` in :data:`STRIDES` (:func:`grid_stride`); channels ``[:C]``
heatmap *logits*, ``[C:]`` the distances ``(left, top, right, bottom)`` in canvas units;
optionally ``"count": float32 [B, K + 1]``, probabilities of 0 .. K digits. Boxes are ``[xmin,
ymin, xmax, ymax]`` normalized to the canvas. Knows nothing of data: the loss takes the padded
targets ``[B, K, 5]`` of :func:`pack_targets`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from .boxes import iou_tensor
from .task import check_canvas_size, check_positive_int

STRIDE = 2  # build_detector's default
STRIDES = (1, 2, 4, 8, 16)  # the grids the detector's outputs may have
NMS_PIXELS = 10  # a peak must be the best of the cells within about 10 px (5x5 cells at stride 2, 3x3 at 4)
MAX_DETECTIONS = 10  # per canvas, at least: COCO's AR@10 (detections_kept keeps 5 per digit a task may hold)
DEFAULT_THRESHOLD = 0.5  # the count threshold of a model that saves none (a model of your own)
HEAT_PRIOR = 0.01  # the heatmap's initial probability: few cells hold a digit's centre
SIGMA_SCALE = 0.54 / 6  # a digit's heatmap bump: sigma = 0.09 x its box side (TTFNet's alpha / 6)


def detections_kept(max_count: int) -> int:
    """Detections kept per canvas for up to ``max_count`` digits: five per digit, at least
    :data:`MAX_DETECTIONS` (10 at AIR's two digits, COCO's 100 at 20)."""
    return max(MAX_DETECTIONS, 5 * int(max_count))


@keras.saving.register_keras_serializable(package="mnist_loc")
class CountThreshold(layers.Layer):
    """Passes its input through and keeps what decoding needs from the model's file: the
    score from which a detection counts and the cap on detections per canvas.

    The threshold is a non-trainable weight, so the one chosen on validation canvases is
    saved in the ``.keras`` file with the model; ``max_detections`` is in the layer's config.
    :func:`saved_defaults` reads both (the defaults of :func:`mnist_loc.evaluation.predict`).
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, max_detections: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.initial_threshold = float(threshold)
        self.max_detections = None if max_detections is None else check_positive_int(max_detections, "max_detections")

    def build(self, input_shape):
        self.threshold = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_threshold), trainable=False,
            name="threshold", dtype="float32",
        )

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {**super().get_config(), "threshold": self.initial_threshold, "max_detections": self.max_detections}


def build_detector(canvas_size: int = 50, num_classes: int = 10, *, max_count: int | None = 2, width: int = 48,
                   stride: int = STRIDE, dilations=(1, 2, 4, 1), pyramid: bool = False, dtype_policy=None) -> keras.Model:
    """The package's detector, uncompiled.

    Input float32 ``[B, S, S, 1]`` → a stem to the output grid of stride ``s`` (2 or 4), one
    stride-2 Conv2D(3) per halving → a trunk → 1x1 heads ``heatmap`` (C logits, bias at a
    1% prior) and ``box`` (4 distances), concatenated as ``detections`` ``[B, ceil(S/s),
    ceil(S/s), C + 4]``; with ``max_count`` K (None: no count head), Conv2D(64, 3, stride 2)
    → global mean and max → Dense(64, relu) → ``count`` ``[B, K + 1]`` softmax. All 3x3
    convolutions relu and "same" (the pyramid's with batch norm before the relu).
    ``dtype_policy`` sets the trunk's compute dtype; the heads compute in float32.

    Trunks: by default one Conv2D(width, 3) per entry of ``dilations``, with that dilation.
    The receptive field is ``3 + 2 (stride - 1)`` px for the stem plus ``2 stride d`` per
    dilation ``d``: 35 px by default (a whole 28 px digit seen from its centre), 135 px at
    stride 4 with dilations ``(1, 2, 4, 8, 1)``. ``pyramid=True`` (``dilations`` unused):
    Conv2D(32) on the output grid, two more grids at 2x and 4x the stride (Conv2D(64) x2,
    Conv2D(128) x2 + one of dilation 2), each added back, upsampled, into the finer one (a
    feature pyramid's top-down path, Lin et al. 2017), then Conv2D(width, 3); the count head
    reads the coarsest grid. At stride 4 a cell sees 183 px, with most of the work on the
    coarse grids, where a convolution is 4 or 16 times cheaper.
    """
    canvas_size = check_canvas_size(canvas_size)
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    width = check_positive_int(width, "width")
    if max_count is not None:
        max_count = check_positive_int(max_count, "max_count")
    if stride not in (2, 4):
        raise ValueError(f"stride must be 2 or 4, got {stride!r}")
    dilations = tuple(check_positive_int(d, "dilations") for d in dilations)
    trunk = {"dtype": dtype_policy} if dtype_policy else {}

    def conv(x, filters, name, strides=1, dilation=1):
        if not pyramid:
            return layers.Conv2D(filters, 3, strides=strides, dilation_rate=dilation, padding="same", activation="relu",
                                 name=name, **trunk)(x)
        x = layers.Conv2D(filters, 3, strides=strides, dilation_rate=dilation, padding="same", use_bias=False, name=name, **trunk)(x)
        return layers.Activation("relu", name=f"{name}_relu", **trunk)(layers.BatchNormalization(name=f"{name}_bn", **trunk)(x))

    inputs = keras.Input(shape=(canvas_size, canvas_size, 1), name="canvas")
    if pyramid:
        x = conv(inputs, 16, "stem", strides=2) if stride == 4 else inputs
        fine = conv(conv(x, 32, "c2a", strides=2), 32, "c2b")
        middle = conv(conv(fine, 64, "c3a", strides=2), 64, "c3b")
        coarse = conv(conv(conv(middle, 128, "c4a", strides=2), 128, "c4b"), 128, "c4c", dilation=2)
        x = coarse
        for name, finer, filters in (("p3", middle, 64), ("p2", fine, width)):
            up = layers.UpSampling2D(2, name=f"{name}_up", **trunk)(layers.Conv2D(finer.shape[-1], 1, name=f"{name}_lateral", **trunk)(x))
            up = layers.Cropping2D(((0, up.shape[1] - finer.shape[1]), (0, up.shape[2] - finer.shape[2])), name=f"{name}_crop", **trunk)(up)
            x = conv(layers.Add(name=f"{name}_add", **trunk)([up, finer]), filters, name)
        summary = coarse
    else:
        x = conv(inputs, 32, "conv1", strides=2)
        if stride == 4:
            x = conv(x, 32, "conv1b", strides=2)
        for i, dilation in enumerate(dilations, start=2):
            x = conv(x, width, f"conv{i}", dilation=dilation)
        summary = x
    prior = float(-np.log((1 - HEAT_PRIOR) / HEAT_PRIOR))
    heat = layers.Conv2D(num_classes, 1, bias_initializer=keras.initializers.Constant(prior), name="heatmap", dtype="float32")(x)
    box = layers.Conv2D(4, 1, name="box", dtype="float32")(x)
    detections = layers.Concatenate(name="heads", dtype="float32")([heat, box])
    kept = detections_kept(max_count or 1)
    detections = CountThreshold(max_detections=kept, name="detections", dtype="float32")(detections)
    outputs = {"detections": detections}
    if max_count is not None:
        c = conv(summary, 64, "count_conv", strides=2)
        c = layers.Concatenate(name="count_pool", dtype="float32")(
            [layers.GlobalAveragePooling2D(name="count_mean", **trunk)(c), layers.GlobalMaxPooling2D(name="count_max", **trunk)(c)])
        c = layers.Dense(64, activation="relu", name="count_dense", dtype="float32")(c)
        outputs["count"] = layers.Dense(max_count + 1, activation="softmax", name="count", dtype="float32")(c)
    return keras.Model(inputs, outputs, name="mnist_loc_detector")


def count_threshold(model) -> float | None:
    """The score threshold saved in ``model`` (its :class:`CountThreshold` layer), or None.

    Rounded to 6 decimals: the weight is float32, the thresholds tried have 2 decimals."""
    for layer in model.layers if hasattr(model, "layers") else ():
        if isinstance(layer, CountThreshold) and layer.built:
            return round(float(ops.convert_to_numpy(layer.threshold)), 6)
    return None


def saved_defaults(model) -> tuple[float, int | None]:
    """``(threshold, max_detections)`` that decoding ``model``'s outputs uses by default: those
    its :class:`CountThreshold` layer saved, else :data:`DEFAULT_THRESHOLD` and None (then
    :func:`detections_kept` of the count head's ``K``, without one :data:`MAX_DETECTIONS`)."""
    threshold = count_threshold(model)
    layer = next((layer for layer in getattr(model, "layers", ()) if isinstance(layer, CountThreshold)), None)
    return (DEFAULT_THRESHOLD if threshold is None else threshold), (layer.max_detections if layer is not None else None)


def set_count_threshold(model, threshold: float) -> bool:
    """Save ``threshold`` in ``model``'s :class:`CountThreshold` layer; False if it has none."""
    for layer in model.layers if hasattr(model, "layers") else ():
        if isinstance(layer, CountThreshold) and layer.built:
            layer.threshold.assign(float(threshold))
            return True
    return False


def count_targets(labels, max_count: int):
    """One-hot ``[B, K + 1]`` of the number of digits in padded ``labels`` ``[B, K]`` (-1: none)."""
    return ops.one_hot(ops.sum(ops.cast(ops.convert_to_tensor(labels) >= 0, "int32"), axis=-1), max_count + 1)


def pack_targets(labels, boxes):
    """The detector's one training target: float32 ``[B, K, 5]``, ``[label, xmin, ymin, xmax,
    ymax]`` per digit slot, label -1 where a canvas holds no digit (Keras hands one target to
    the one loss of the one output)."""
    return ops.concatenate([ops.cast(labels, "float32")[..., None], ops.cast(boxes, "float32")], axis=-1)


def grid_stride(canvas_size: int, grid: int) -> int | None:
    """The stride ``s`` in :data:`STRIDES` of a ``grid x grid`` output on ``S x S`` canvases
    (``grid = ceil(S / s)``), or None if no stride gives that grid."""
    return next((s for s in STRIDES if -(-int(canvas_size) // s) == grid), None)


def nms_window(stride: int) -> int:
    """Cells of the peak neighbourhood at ``stride``: the odd number covering ~:data:`NMS_PIXELS`,
    at least 3 (a peak always beats its eight neighbours, at every stride in :data:`STRIDES`)."""
    return max(3, 2 * (-(-NMS_PIXELS // stride) // 2) + 1)


def _stride(grid: int, canvas_size: int) -> int:
    stride = grid_stride(canvas_size, grid)
    if stride is None:
        raise ValueError(f"a {grid}x{grid} grid on {canvas_size} px canvases has none of the strides {STRIDES}")
    return stride


def _cell_centres(size: int, canvas_size: int):
    return (ops.arange(size, dtype="float32") + 0.5) * (_stride(size, canvas_size) / canvas_size)


def _decode_boxes(distances, canvas_size: int):
    """``[B, H, W, 4]`` distances (left, top, right, bottom) → boxes ``[B, H, W, 4]``."""
    height, width = distances.shape[1], distances.shape[2]
    cx = _cell_centres(width, canvas_size)[None, None, :]
    cy = _cell_centres(height, canvas_size)[None, :, None]
    return ops.stack([cx - distances[..., 0], cy - distances[..., 1], cx + distances[..., 2], cy + distances[..., 3]], axis=-1)


def heatmap_targets(targets, height: int, width: int, num_classes: int, canvas_size: int):
    """Dense targets of packed ``[B, K, 5]`` targets on an ``H x W`` grid.

    Returns ``(heat [B, H, W, C], centres [B, H, W, C], owner_boxes [B, H, W, 4], weight [B, H, W])``:
    per class the largest Gaussian bump of its digits, centred on the cell holding each
    digit's box centre (exactly 1 there), sigma ``SIGMA_SCALE`` x the box's width and height,
    at least half a cell; 1 at each digit's centre cell; the box of the digit whose bump is
    highest at each cell, and that bump's height, which weights the box loss.
    """
    labels = ops.cast(targets[..., 0], "int32")
    boxes = targets[..., 1:]
    present = ops.cast(labels >= 0, "float32")  # [B, K]
    cell = _stride(height, canvas_size) / canvas_size
    centre_x = (boxes[..., 0] + boxes[..., 2]) / 2
    centre_y = (boxes[..., 1] + boxes[..., 3]) / 2
    column = ops.clip(ops.floor(centre_x / cell), 0, width - 1)
    row = ops.clip(ops.floor(centre_y / cell), 0, height - 1)
    sigma_x = ops.maximum(SIGMA_SCALE * (boxes[..., 2] - boxes[..., 0]), cell / 2)
    sigma_y = ops.maximum(SIGMA_SCALE * (boxes[..., 3] - boxes[..., 1]), cell / 2)
    dx = (ops.arange(width, dtype="float32")[None, None, :] - column[..., None]) * cell  # [B, K, W]
    dy = (ops.arange(height, dtype="float32")[None, None, :] - row[..., None]) * cell  # [B, K, H]
    bump = ops.exp(-(dy[..., :, None] ** 2) / (2 * sigma_y[..., None, None] ** 2) - dx[..., None, :] ** 2 / (2 * sigma_x[..., None, None] ** 2))
    bump = bump * present[..., None, None]  # [B, K, H, W]
    is_centre = ops.cast(ops.equal(dy[..., :, None], 0.0) & ops.equal(dx[..., None, :], 0.0), "float32") * present[..., None, None]
    # Per class the largest bump: a segment max over (canvas, class) is exact and needs no [B, K, H, W, C] tensor.
    batch = ops.shape(labels)[0]
    segments = ops.reshape(ops.arange(batch, dtype="int32")[:, None] * num_classes + ops.maximum(labels, 0), [-1])
    per_class = lambda maps: ops.transpose(ops.reshape(  # noqa: E731
        ops.segment_max(ops.reshape(maps, [-1, height, width]), segments, num_segments=batch * num_classes),
        [batch, num_classes, height, width]), [0, 2, 3, 1])
    heat, centres = ops.maximum(per_class(bump), 0.0), ops.maximum(per_class(is_centre), 0.0)
    owner = ops.argmax(bump, axis=1)  # [B, H, W]
    # Each cell's owner's box, gathered from [B, K, 4] by [B, H W] indices: no [B, K, H, W, 4] tensor.
    cells = ops.reshape(owner, [batch, height * width, 1])
    owner_boxes = ops.reshape(ops.take_along_axis(boxes, cells, axis=1), [batch, height, width, 4])
    return heat, centres, owner_boxes, ops.max(bump, axis=1)


@keras.saving.register_keras_serializable(package="mnist_loc")
class DetectionLoss(keras.losses.Loss):
    """The detector's loss on packed targets ``[B, K, 5]`` and outputs ``[B, H, W, C + 4]``.

    Heatmap: CenterNet's penalty-reduced focal loss (alpha 2, beta 4) against
    :func:`heatmap_targets`. Boxes: ``1 - IoU + L1`` of each cell's decoded box against the
    box of the digit that owns the cell, weighted by that digit's bump (so cells near a
    centre, where peaks land, regress its box), times ``box_weight``. Classes, with
    ``class_weight`` > 0: the softmax cross-entropy of each cell's heatmap logits against
    the class of the digit that owns it, weighted by the same bump, times ``class_weight``
    (the focal loss names a digit at its one centre cell; this names it at every cell
    near the centre, where the peak may land). All are summed over the batch and divided
    by its number of digits (at least 1).
    """

    def __init__(self, canvas_size: int = 50, box_weight: float = 1.0, class_weight: float = 0.0, name="detection",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.canvas_size, self.box_weight, self.class_weight = int(canvas_size), float(box_weight), float(class_weight)

    def call(self, y_true, y_pred):
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        height, width, num_classes = y_pred.shape[1], y_pred.shape[2], y_pred.shape[3] - 4
        heat, centres, owner_boxes, weight = heatmap_targets(y_true, height, width, num_classes, self.canvas_size)
        logits = y_pred[..., :num_classes]
        probability = ops.sigmoid(logits)
        positive = centres * ops.square(1 - probability) * -ops.log_sigmoid(logits)
        negative = (1 - centres) * ops.power(1 - heat, 4) * ops.square(probability) * -ops.log_sigmoid(-logits)
        focal = ops.sum(positive + negative, axis=[1, 2, 3])  # [B]
        boxes = _decode_boxes(y_pred[..., num_classes:], self.canvas_size)
        errors = 1.0 - iou_tensor(boxes, owner_boxes, ops) + ops.mean(ops.abs(boxes - owner_boxes), axis=-1)
        weight_sum = ops.maximum(ops.sum(weight, axis=[1, 2]), 1e-6)
        per_digit = self.box_weight * ops.sum(weight * errors, axis=[1, 2]) / weight_sum  # [B]
        if self.class_weight:
            owner_class = ops.argmax(heat, axis=-1)  # the owner's bump is the highest of its class's at its cells
            wrong = ops.sparse_categorical_crossentropy(owner_class, logits, from_logits=True)  # [B, H, W]
            per_digit = per_digit + self.class_weight * ops.sum(weight * wrong, axis=[1, 2]) / weight_sum
        digits = ops.sum(ops.cast(y_true[..., 0] >= 0, "float32"), axis=1)
        batch = ops.cast(ops.shape(y_true)[0], "float32")
        # Mean over the batch after the reduction: per-canvas sums scaled so the result is the sum over digits.
        return (focal + per_digit * digits) * batch / ops.maximum(ops.sum(digits), 1.0)

    def get_config(self):
        return {**super().get_config(), "canvas_size": self.canvas_size, "box_weight": self.box_weight, "class_weight": self.class_weight}


def decode(detections, canvas_size: int, max_detections: int = MAX_DETECTIONS, count=None, window: int | None = None) -> dict:
    """Detections of raw outputs ``[B, H, W, C + 4]`` (numpy or tensor), best first.

    A detection is a cell whose best class logit is the largest of its ``window x window``
    neighbourhood (default :func:`nms_window` of the grid's stride: one peak per place,
    whatever its class; of equal neighbours, the first in row-major order), with that class,
    scored by its sigmoid, and the cell's decoded box clipped to the canvas. Peaks are found
    on logits, not on sigmoids, which round to 1.0 alike for every logit above ~17. With
    ``count`` ``[B, K + 1]`` (the count head's probabilities), the ``i``-th best peak's score
    becomes the geometric mean of its own and the probability of more than ``i`` digits, so a
    canvas the count head reads as one digit keeps one confident detection. Returns numpy
    ``{"boxes": float32 [B, M, 4] ([xmin, ymin, xmax, ymax] normalized, inside [0, 1]),
    "labels": int32 [B, M] (-1 wherever the score is 0), "scores": float32 [B, M] (sorted,
    highest first, 0 where none)}``, ``M = min(max_detections, H W)``.
    """
    detections = ops.convert_to_tensor(detections, "float32")
    num_classes = detections.shape[-1] - 4
    window = window or nms_window(_stride(detections.shape[1], canvas_size))
    logits = detections[..., :num_classes]
    best = ops.max(logits, axis=-1)  # [B, H, W]
    label = ops.argmax(logits, axis=-1)
    top = ops.equal(best, ops.squeeze(ops.max_pool(best[..., None], window, strides=1, padding="same"), -1))
    # Of equal neighbours only the first is a peak: every peak in a window holds the window's maximum.
    order = -ops.reshape(ops.arange(ops.size(best[0]), dtype="float32"), ops.shape(best)[1:])[None]
    first = ops.where(top, order, -1e9)
    peaks = top & ops.equal(first, ops.squeeze(ops.max_pool(first[..., None], window, strides=1, padding="same"), -1))
    batch = ops.shape(best)[0]
    flat_score = ops.reshape(ops.where(peaks, ops.sigmoid(best), 0.0), [batch, -1])
    scores, where = ops.top_k(flat_score, k=min(max_detections, flat_score.shape[-1]))
    boxes = ops.reshape(ops.clip(_decode_boxes(detections[..., num_classes:], canvas_size), 0.0, 1.0), [batch, -1, 4])
    boxes = ops.convert_to_numpy(ops.take_along_axis(boxes, where[..., None], axis=1)).astype(np.float32)
    labels = ops.convert_to_numpy(ops.take_along_axis(ops.reshape(label, [batch, -1]), where, axis=1))
    scores = ops.convert_to_numpy(scores).astype(np.float32)
    if count is not None:
        count = np.asarray(count, np.float64)
        more_than = 1.0 - np.cumsum(count, axis=-1)[:, :-1]  # P(count > i), i = 0 .. K - 1
        beyond = np.zeros((len(count), max(scores.shape[1] - more_than.shape[1], 0)))
        more_than = np.clip(np.concatenate([more_than, beyond], axis=1)[:, : scores.shape[1]], 0.0, 1.0)
        scores = np.sqrt(scores * more_than).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")
        scores, labels = np.take_along_axis(scores, order, 1), np.take_along_axis(labels, order, 1)
        boxes = np.take_along_axis(boxes, order[..., None], 1)
    return {"boxes": boxes, "labels": np.where(scores > 0, labels, -1).astype(np.int32), "scores": scores}


def compile_detector(model: keras.Model, *, canvas_size: int, count: bool = False, learning_rate=1e-3, box_weight: float = 1.0,
                     class_weight: float = 0.0, ema_momentum: float = 0.0, steps_per_execution: int = 1) -> keras.Model:
    """Compile a model with the detector's outputs in place: Adam(``learning_rate``, a float
    or a schedule), :class:`DetectionLoss` (``box_weight``, ``class_weight``) on ``detections`` and, if the model has a
    ``count`` output, categorical cross-entropy on it (weight 1); ``ema_momentum`` > 0 keeps
    an average of the weights as in :func:`mnist_loc.model.compile_model`."""
    losses = {"detections": DetectionLoss(canvas_size, box_weight, class_weight)}
    if count:
        losses["count"] = "categorical_crossentropy"
    optimizer = (keras.optimizers.Adam(learning_rate, use_ema=True, ema_momentum=ema_momentum) if ema_momentum
                 else keras.optimizers.Adam(learning_rate))
    model.compile(optimizer=optimizer, loss=losses,
                  steps_per_execution=check_positive_int(steps_per_execution, "steps_per_execution"))
    return model
