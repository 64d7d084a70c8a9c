"""mnist_loc: classify an MNIST digit and regress its box on a 75x75 canvas with one CNN.

Boxes everywhere are ``[xmin, ymin, xmax, ymax]`` normalized to the canvas size.
Modules, bottom up: ``task`` (what the canvases are), ``config`` (the recipe),
``boxes`` and ``quiet``; ``datasets`` (find or download MNIST); ``data`` (render a
task's canvases); ``model``; ``training``, ``evaluation``, ``explain`` (Grad-CAM heatmaps) and ``artifacts`` (any
Keras model with the two outputs); ``runs`` (train + score + run folder), ``table``, ``plots``
and ``cli``. Names below are imported on first use, so
``import mnist_loc`` (and ``python -m mnist_loc --help``) does not load TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Task": "task",
    "TASKS": "task",
    "get_task": "task",
    "iou": "boxes",
    "DataNotFoundError": "datasets",
    "import_tensorflow_quietly": "quiet",
    "load_digits": "data",
    "make_dataset": "data",
    "place_digits": "data",
    "canvases_at": "data",
    "Digits": "data",
    "build_model": "model",
    "compile_model": "model",
    "MeanBoxIoU": "model",
    "TrainConfig": "config",
    "TrainingDiverged": "training",
    "train": "training",
    "ModelOutputError": "training",
    "run": "runs",
    "Run": "runs",
    "runs_table": "table",
    "evaluate": "evaluation",
    "predict": "evaluation",
    "heatmaps": "explain",
    "ModelFileError": "artifacts",
    "load_model": "artifacts",
    "save_model": "artifacts",
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
