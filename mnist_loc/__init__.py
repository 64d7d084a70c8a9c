"""mnist_loc: classify an MNIST digit and regress its box on a black canvas with one CNN.

Boxes everywhere are ``[xmin, ymin, xmax, ymax]`` normalized to the canvas size.
Modules, bottom up (a module imports only those before it):

- ``task`` (what the canvases are, and their kind of answer), ``boxes`` (IoU), ``config`` (the
  recipe), ``tf_runtime``, ``safe_writes`` (atomic files, one writer per folder), ``artifacts``
  (the run folder): pure Python; ``plots`` (figures of arrays, matplotlib only);
- ``tfds_source`` (where digits come from), ``placement`` (how a canvas is drawn),
  ``data`` (the in-memory ``Digits`` a run trains on and the canvases drawn from them);
- ``model`` (the course model, its losses) and ``detector`` (the dense-head detector, its loss
  and decoding), knowing nothing of data;
- ``inference`` (what both kinds share: canvases checked for a model, the cached forward pass);
- the two kinds of answer, each in one module with the same names (its default model, output
  check, compile, targets, predict, calibration, report, table columns, picture):
  ``localization`` (one digit per canvas) and ``detection`` (several: COCO AP by pycocotools,
  counting);
- ``evaluation`` (``predict``, ``evaluate`` and the kind that answers), ``training``,
  ``explain`` (Grad-CAM), ``experiment`` (``run()``: train, score, write);
- ``table`` and ``cli`` on top.

Names below are imported on first use, so ``import mnist_loc`` (and ``python -m mnist_loc
--help``) does not load TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_MODULES = {  # module: the names it exports here
    "task": ("Task", "TASKS", "get_task"), "boxes": ("iou",), "config": ("TrainConfig",),
    "tf_runtime": ("import_tensorflow_quietly",), "tfds_source": ("DataNotFoundError",),
    "data": ("Digits", "make_dataset", "canvases_at"), "placement": ("place_digits",),
    "model": ("build_model", "compile_model", "MeanBoxIoU"), "detector": ("build_detector",),
    "training": ("train", "TrainingDiverged"), "inference": ("ModelOutputError",),
    "evaluation": ("evaluate", "predict"), "explain": ("heatmaps",),
    "artifacts": ("ModelFileError", "load_model", "save_model"), "experiment": ("run", "RunResult"),
    "table": ("runs_table",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mnist_loc' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
