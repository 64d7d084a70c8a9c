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

_EXPORTS = {
    "Task": "task",
    "TASKS": "task",
    "get_task": "task",
    "iou": "boxes",
    "TrainConfig": "config",
    "import_tensorflow_quietly": "tf_runtime",
    "DataNotFoundError": "tfds_source",
    "Digits": "data",
    "make_dataset": "data",
    "canvases_at": "data",
    "place_digits": "placement",
    "build_model": "model",
    "compile_model": "model",
    "MeanBoxIoU": "model",
    "build_detector": "detector",

    "train": "training",
    "TrainingDiverged": "training",
    "ModelOutputError": "inference",
    "evaluate": "evaluation",
    "predict": "evaluation",
    "heatmaps": "explain",
    "ModelFileError": "artifacts",
    "load_model": "artifacts",
    "save_model": "artifacts",
    "run": "experiment",
    "RunResult": "experiment",
    "runs_table": "table",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mnist_loc' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
