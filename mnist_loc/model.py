"""The two-headed CNN: one trunk, a classification head and a bounding-box head.

Both heads read the same features: where a digit is and what it is are found by the
same strokes, so one trunk learns both at little more than the cost of one.
"""

from __future__ import annotations

import functools
import re

import keras
from keras import layers, ops

from .boxes import BOX_LOSSES, iou_tensor
from .task import check_canvas_size, check_positive_int


def build_model(canvas_size: int = 75, num_classes: int = 10, *, dtype_policy=None) -> keras.Model:
    """The course model, uncompiled.

    Input float32 ``[B, S, S, 1]`` → Conv2D(16,3,relu) → AvgPool(2) → Conv2D(32,3,relu)
    → AvgPool(2) → Conv2D(64,3,relu) → AvgPool(2) → Flatten → Dense(128,relu) → heads
    ``classification`` (Dense(num_classes), softmax probabilities ``[B, num_classes]``)
    and ``bounding_box`` (Dense(4), linear, ``[B, 4]`` as ``[xmin, ymin, xmax, ymax]``
    normalized to the canvas). 426,638 parameters at S = 75.

    ``dtype_policy`` (e.g. ``"mixed_bfloat16"``) sets the trunk's compute dtype; the
    Dense layers and heads always compute in float32, since box edges need more than
    bfloat16's 8 bits of mantissa (1/256 of the canvas is 0.3 px).
    """
    canvas_size = check_canvas_size(canvas_size)
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    trunk = {"dtype": dtype_policy} if dtype_policy else {}
    inputs = keras.Input(shape=(canvas_size, canvas_size, 1), name="canvas")
    x = inputs
    for i, filters in enumerate((16, 32, 64), start=1):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{i}", **trunk)(x)
        x = layers.AveragePooling2D(2, name=f"pool{i}", **trunk)(x)
    x = layers.Flatten(name="flatten", **trunk)(x)
    x = layers.Dense(128, activation="relu", name="dense", dtype="float32")(x)
    classification = layers.Dense(num_classes, activation="softmax", name="classification", dtype="float32")(x)
    bounding_box = layers.Dense(4, name="bounding_box", dtype="float32")(x)
    return keras.Model(inputs, {"classification": classification, "bounding_box": bounding_box}, name="mnist_loc")


@functools.cache
def native_bfloat16() -> bool:
    """Whether this machine computes bfloat16 natively, so a bfloat16 trunk is faster.

    True for GPUs of compute capability 8.0 or more (all of them, when there are
    several) and, with no GPU, for CPUs with AVX-512 BF16 or AMX (read from Linux's
    ``/proc/cpuinfo``; False where that file does not exist). Elsewhere oneDNN emulates
    bfloat16 and is slower than float32.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return all(tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) >= (8, 0) for g in gpus)
    try:
        with open("/proc/cpuinfo") as f:
            return cpu_has_bfloat16(f.read())
    except OSError:
        return False


def cpu_has_bfloat16(cpuinfo: str) -> bool:
    """Whether the text of ``/proc/cpuinfo`` lists AVX-512 BF16 or AMX BF16."""
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


def trunk_policy(mixed_precision: bool | None) -> str | None:
    """The course model's trunk dtype policy for ``TrainConfig.mixed_precision``:
    ``"mixed_bfloat16"`` for True, None (float32) for False, and for None whichever
    :func:`native_bfloat16` says is faster here."""
    if mixed_precision is None:
        mixed_precision = native_bfloat16()
    return "mixed_bfloat16" if mixed_precision else None


@keras.saving.register_keras_serializable(package="mnist_loc")
class MeanBoxIoU(keras.metrics.Mean):
    """Mean IoU of predicted vs true ``[B, 4]`` boxes ``[xmin, ymin, xmax, ymax]``.

    Not ``keras.metrics.IoU``, which scores segmentation masks.
    """

    def __init__(self, name="mean_iou", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        return super().update_state(iou_tensor(y_pred, y_true, ops), sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="mnist_loc")
class BoxLoss(keras.losses.Loss):
    """Box regression loss on ``[B, 4]`` normalized boxes.

    ``kind``: ``"mse"`` (the course's), ``"l1"`` (mean absolute error), or ``"iou_l1"``
    (``1 - IoU`` plus L1). L1 keeps a constant pull on sub-pixel errors, where MSE's
    gradient fades; ``1 - IoU`` measures the error in the unit we report.
    """

    def __init__(self, kind="mse", name=None, reduction="sum_over_batch_size", dtype=None):
        if kind not in BOX_LOSSES:
            raise ValueError(f"unknown box loss {kind!r}; choose one of {BOX_LOSSES}")
        super().__init__(name=name or f"box_{kind}", reduction=reduction, dtype=dtype)
        self.kind = kind

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        if self.kind == "mse":
            return ops.mean(ops.square(y_pred - y_true), axis=-1)
        l1 = ops.mean(ops.abs(y_pred - y_true), axis=-1)
        if self.kind == "l1":
            return l1
        return 1.0 - iou_tensor(y_pred, y_true, ops) + l1

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


def compile_model(model: keras.Model, *, learning_rate=1e-3, box_loss_weight=1.0, box_loss: str = "mse",
                  classification_loss_weight=1.0, label_smoothing: float = 0.0, ema_momentum: float = 0.0,
                  steps_per_execution: int = 1) -> keras.Model:
    """Compile ``model`` in place and return it. Defaults are the course lab's recipe.

    Adam(``learning_rate``: a float or a ``keras.optimizers.schedules`` schedule);
    losses ``categorical_crossentropy`` on ``classification`` and ``box_loss`` (see
    :class:`BoxLoss`; ``"mse"`` is Keras' mean squared error) on ``bounding_box``,
    weighted ``classification_loss_weight : box_loss_weight`` (1 : 1); metrics
    accuracy, and mse plus :class:`MeanBoxIoU` on the box. ``steps_per_execution``
    is Keras' (batches per call into the backend; it changes speed, not results).

    ``label_smoothing`` > 0 trains the classifier toward ``(1 - ls) * one_hot + ls / C``.
    ``ema_momentum`` > 0 makes Adam keep an exponential moving average of the weights
    (Polyak averaging, Keras' ``use_ema``), which ``fit`` copies into the model when it
    ends; pass ``keras.callbacks.SwapEMAWeights()`` to validate with it during ``fit``.
    """
    box = "mse" if box_loss == "mse" else BoxLoss(box_loss)  # the course's loss stays Keras' own
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if not 0.0 <= ema_momentum < 1.0:
        raise ValueError(f"ema_momentum must be in [0, 1), got {ema_momentum!r}")
    classification = (
        keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing) if label_smoothing
        else "categorical_crossentropy"  # the course's loss stays Keras' own string
    )
    optimizer = (
        keras.optimizers.Adam(learning_rate, use_ema=True, ema_momentum=ema_momentum) if ema_momentum
        else keras.optimizers.Adam(learning_rate)
    )
    model.compile(
        optimizer=optimizer,
        loss={"classification": classification, "bounding_box": box},
        loss_weights={"classification": classification_loss_weight, "bounding_box": box_loss_weight},
        metrics={"classification": ["accuracy"], "bounding_box": ["mse", MeanBoxIoU()]},
        steps_per_execution=check_positive_int(steps_per_execution, "steps_per_execution"),
    )
    return model
