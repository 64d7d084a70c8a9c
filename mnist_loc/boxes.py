"""Boxes ``[xmin, ymin, xmax, ymax]`` and their intersection over union.

Coordinates are edges in continuous image coordinates, usually normalized to the
canvas (divide pixels by the canvas size). Any consistent unit works for IoU.

Convention for degenerate boxes: a box with ``xmax < xmin`` or ``ymax < ymin`` is
*inverted* and counts as empty (zero width or height), never as a box of negative or
mirrored extent. IoU is 0 whenever the union is empty (two zero-area boxes), so it
is always a number in [0, 1], never NaN.
"""

from __future__ import annotations

import numpy as np

BOX_LOSSES = ("mse", "l1", "iou_l1")  # the box regression losses of model.BoxLoss
# Size buckets of a true box by its area in canvas pixels (COCO's idea, scaled to 28 px digits
# on a 75 px canvas): small < 20^2, medium 20^2 to 36^2, large >= 36^2.
SIZE_BUCKETS = (("small", 0, 20**2), ("medium", 20**2, 36**2), ("large", 36**2, float("inf")))


def iou_tensor(pred, true, xp=np):
    """Element-wise IoU of ``[..., 4]`` boxes with array namespace ``xp``.

    Shared by :func:`iou` (``xp=numpy``) and the Keras metric and loss
    (``xp=keras.ops``), so the training signal and the report use one formula.
    Returns ``[...]``. Does no input checking.
    """
    pxmin, pymin, pxmax, pymax = (pred[..., i] for i in range(4))
    txmin, tymin, txmax, tymax = (true[..., i] for i in range(4))
    zero = xp.zeros_like(pxmin)
    pred_area = xp.maximum(pxmax - pxmin, zero) * xp.maximum(pymax - pymin, zero)
    true_area = xp.maximum(txmax - txmin, zero) * xp.maximum(tymax - tymin, zero)
    inter_w = xp.maximum(xp.minimum(pxmax, txmax) - xp.maximum(pxmin, txmin), zero)
    inter_h = xp.maximum(xp.minimum(pymax, tymax) - xp.maximum(pymin, tymin), zero)
    inter = inter_w * inter_h
    union = pred_area + true_area - inter
    safe_union = xp.where(union > 0, union, xp.ones_like(union))
    return xp.where(union > 0, inter / safe_union, zero)


def check_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """Return ``boxes`` as float64 ``[..., 4]``, or raise ValueError/TypeError naming the problem."""
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be numeric [..., 4] boxes: {error}") from None
    if array.ndim == 0 or array.shape[-1] != 4:
        raise ValueError(
            f"{name} must have shape (4,) or (N, 4) as [xmin, ymin, xmax, ymax], got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contain NaN or infinite coordinates")
    return array


def iou(pred_boxes, true_boxes):
    """Intersection over union of matching boxes.

    Args:
      pred_boxes, true_boxes: array-likes ``(N, 4)`` (or ``(4,)``) of
        ``[xmin, ymin, xmax, ymax]``, same shape, finite.

    Returns:
      float64 numpy array ``(N,)`` of IoU in [0, 1]; a float for ``(4,)`` inputs.
      Inverted boxes count as empty and an empty union gives 0 (module docstring).

    Raises:
      ValueError: shapes differ or are not ``[..., 4]``, or a coordinate is NaN/inf.
    """
    pred = check_boxes(pred_boxes, "pred_boxes")
    true = check_boxes(true_boxes, "true_boxes")
    if pred.shape != true.shape:
        raise ValueError(f"pred_boxes {pred.shape} and true_boxes {true.shape} must have the same shape")
    result = iou_tensor(pred, true, np)
    return float(result) if result.ndim == 0 else result
