"""Predict and evaluate with any Keras model: each asks the kind of answer for the work.

Two kinds, each in one module with the same names: one digit per canvas
(:mod:`mnist_loc.localization`: a class and a box) and several (:mod:`mnist_loc.detection`:
boxes, classes, scores and a count). A task's kind is decided by its rules
(:attr:`mnist_loc.task.Task.kind`); a model's is read from its outputs without running it
(:func:`mnist_loc.inference.model_kind`). Boxes are ``[xmin, ymin, xmax, ymax]`` normalized
to the canvas.
"""

from __future__ import annotations

import keras

from . import detection, localization
from .data import Digits
from .inference import model_canvases, model_kind
from .task import get_task

KINDS = {"localization": localization, "detection": detection}
TEST_SEED = 0  # a task's fixed test canvases: one placement, the same for every training seed


def kind_of(task=None, model: keras.Model | None = None, canvas_size: int | None = None):
    """The module of the kind that answers for ``model`` on ``task``: a task of several digits
    takes the detector's kind only (its checks refuse other models); otherwise the model's
    outputs decide (a detector answers a one-digit task by its best detection); with no model,
    the task's. ``canvas_size`` defaults to the task's."""
    if model is None or (task is not None and task.kind == "detection"):
        return KINDS[task.kind]
    return KINDS[model_kind(model, canvas_size or task.canvas_size)]


def predict(model: keras.Model, images, batch_size: int = 500, *, tta: bool = False, canvas_size: int | None = None,
            threshold: float | None = None, max_detections: int | None = None) -> dict:
    """Run a model on canvases: float32 or uint8 ``[N, S, S, 1]``, ``[N, S, S]``, ``[S, S, 1]`` or
    ``[S, S]`` (:func:`~mnist_loc.inference.check_images`); ``S`` is ``canvas_size``, else what
    the model declares, else the images' own side.

    A model with the two outputs returns ``{"labels": int64 [N], "confidence": float32 [N],
    "probabilities": float32 [N, C], "boxes": float32 [N, 4]}``; ``tta``: average over shifted
    copies (:data:`~mnist_loc.inference.TTA_SHIFTS`).

    A model with the detector's outputs returns ``{"boxes": float32 [N, M, 4], "labels": int32
    [N, M] (-1 where nothing), "scores": float32 [N, M] (highest first, 0 where nothing),
    "counts": int64 [N]}``: ``M`` = ``max_detections``, ``counts`` the detections scoring at least
    ``threshold``; both default to what the model saved (:func:`mnist_loc.detector.saved_defaults`).
    """
    canvases = model_canvases(model, images, canvas_size)
    kind = kind_of(model=model, canvas_size=canvases.shape[1])
    return kind.predict(model, canvases, batch_size, tta=tta, threshold=threshold, max_detections=max_detections)


def evaluate(model: keras.Model, data, *, task=None, split: str = "test", seed: int = TEST_SEED, tta: bool = False,
             threshold: float | None = None, return_predictions: bool = False, keep_images: bool = True):
    """Score any model on ``data``: a :class:`~mnist_loc.data.Digits` (then the fixed canvases of
    ``task``'s ``split`` at placement ``seed``, by default the test canvases every run is scored
    on) or a finite ``tf.data.Dataset`` of ``(images, targets)`` batches as
    :func:`~mnist_loc.data.make_dataset` yields them.

    The report is the kind's: :func:`mnist_loc.localization.evaluate` (accuracy, IoU; ``tta``)
    or :func:`mnist_loc.detection.evaluate` (COCO AP, recall, counting; ``threshold``, default
    the model's saved one). With ``return_predictions``, ``(report, predictions)``, so nothing
    needs predicting twice; ``keep_images=False`` keeps a detection task's canvases out of them.
    """
    if isinstance(data, Digits):
        task = get_task(task)
        kind = kind_of(task, model)
    else:  # the dataset's canvas side, if its spec says one (the kind's checks name a malformed dataset's fault)
        spec = data.element_spec
        shape = spec[0].shape if isinstance(spec, tuple) and spec else None
        kind = kind_of(model=model, canvas_size=shape[1] if shape is not None and len(shape) == 4 and shape[1] else 28)
    return kind.evaluate(model, data, task=task, split=split, seed=seed, tta=tta, threshold=threshold,
                         return_predictions=return_predictions, keep_images=keep_images)
