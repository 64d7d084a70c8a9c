"""The one config of a training run: a recipe and the task it trains on.

A *recipe* is every field but the task, the seed and the speed-only fields. Named recipes:
``"default"`` (mnist_loc's), ``"sized"`` (the sized tasks' own), ``"detector"`` (the detection
tasks'), ``"fast"`` and ``"lab"`` (the course lab's). How each was chosen, on validation canvases: docs/details.md and docs/testbed.md.
Pure Python (no TensorFlow), so the command line checks its flags before loading anything heavy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .boxes import BOX_LOSSES
from .task import TASKS, Task, check_positive_int, get_task

RECIPES: dict = {
    "default": {},
    "sized": {"epochs": 20, "box_loss_weight": 1.0, "learning_rate": 5e-3, "label_smoothing": 0.1, "ema_momentum": 0.999},
    "fast": {"epochs": 4, "warmup_epochs": 0.2, "label_smoothing": 0.0},
    "detector": {"epochs": 8, "learning_rate": 4e-3, "warmup_epochs": 0.5, "box_loss_weight": 5.0, "label_smoothing": 0.0},
    "dense": {"epochs": 12, "batch_size": 32, "learning_rate": 1.6e-2, "warmup_epochs": 0.5, "box_loss_weight": 5.0,
              "label_smoothing": 0.0, "detector": "pyramid", "class_loss_weight": 1.0, "validation_batch_size": 32},
    "lab": {"epochs": 10, "batch_size": 64, "learning_rate": 1e-3, "schedule": "constant", "warmup_epochs": 0,
            "box_loss": "mse", "box_loss_weight": 1.0, "mixed_precision": False, "label_smoothing": 0.0},
}
# The detector's shapes (mnist_loc.detector.build_detector): "small" sees 35 px around a cell of a stride-2
# grid (AIR's 50 px canvases); "wide" sees 135 px on a stride-4 grid through dilations; "pyramid" adds grids
# of stride 8 and 16 to the stride-4 one (digits of 15 to 99 px on 300 px canvases).
DETECTORS: dict = {"small": {"stride": 2, "dilations": (1, 2, 4, 1)}, "wide": {"stride": 4, "dilations": (1, 2, 4, 8, 1)},
                   "pyramid": {"stride": 4, "pyramid": True}}
TASK_RECIPES = {"sized": "sized", "sized-cluttered": "sized", "multi-mnist": "detector", "mnist-detection": "dense"}  # a named task's own recipe; the others: "default"
_NOT_RECIPE = ("seed", "task", "validation_batch_size", "validation_canvases", "steps_per_execution")


@dataclass(frozen=True)
class TrainConfig:
    """Every choice of a training run. The defaults are mnist_loc's recipe for the course task.

    Against the course lab (``TrainConfig.lab()``) it changes six things, each measured in
    the notebook: a bfloat16 trunk where the hardware computes it natively (``mixed_precision
    =None``; float32 elsewhere, where oneDNN's emulation is ~5x slower), batch 128, warmup +
    cosine decay to a 1e-2 peak, the box loss ``1 - IoU + L1`` at weight 0.5, label smoothing
    0.1 and 12 passes. ``validation_*`` and ``steps_per_execution`` change speed, never weights.
    """

    epochs: int = 12
    steps_per_epoch: int | None = None  # None: one full pass over the training digits
    batch_size: int = 128
    learning_rate: float = 1e-2  # peak of the schedule
    schedule: str = "warmup_cosine"  # linear warmup, cosine decay to 0; or "constant"
    warmup_epochs: float = 1.0
    box_loss: str = "iou_l1"  # see model.BoxLoss
    box_loss_weight: float = 0.5  # the classification loss has weight 1
    class_loss_weight: float = 0.0  # the detector's per-cell class cross-entropy (DetectionLoss); 0: the heatmap alone
    mixed_precision: bool | None = None  # bfloat16 trunk; None: where the hardware has it
    label_smoothing: float = 0.1
    ema_momentum: float = 0.0  # > 0: validate with and keep an EMA of the weights
    detector: str = "small"  # the package's detector's shape on a detection task, a name in DETECTORS
    task: Task = Task()  # a Task, a name in TASKS or Task.to_dict()
    seed: int = 0
    validation_batch_size: int = 500  # at most; and at most inference.PIXELS_PER_BATCH pixels
    validation_canvases: int | None = None  # the first N fixed validation canvases; None: all
    deterministic: bool = True  # TensorFlow op determinism while training: same seed, same weights
    steps_per_execution: int = 16  # at most; the largest divisor of the epoch's steps (training.steps_per_call)

    def __post_init__(self):
        for name, minimum in (("epochs", 0), ("batch_size", 1), ("validation_batch_size", 1), ("seed", 0), ("steps_per_execution", 1)):
            check_positive_int(getattr(self, name), name, minimum)
        for name in ("steps_per_epoch", "validation_canvases"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        object.__setattr__(self, "task", Task.from_dict(self.task) if isinstance(self.task, dict) else get_task(self.task))
        _check_choice("mixed_precision", self.mixed_precision, (None, True, False))
        _check_choice("schedule", self.schedule, ("warmup_cosine", "constant"))
        _check_choice("box_loss", self.box_loss, BOX_LOSSES)
        _check_choice("detector", self.detector, tuple(DETECTORS))
        for name, lowest, inclusive in (("learning_rate", 0, False), ("box_loss_weight", 0, False), ("class_loss_weight", 0, True),
                                         ("warmup_epochs", 0, True)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (value >= lowest if inclusive else value > lowest):
                raise ValueError(f"{name} must be a {'non-negative' if inclusive else 'positive'} number, got {value!r}")
        for name in ("label_smoothing", "ema_momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")

    @classmethod
    def for_task(cls, task=None, *, recipe: str | None = None, **overrides) -> "TrainConfig":
        """The recipe for ``task`` (a Task or a name in TASKS; default the course task) with
        ``overrides`` on top: ``RECIPES[recipe]``, by default the named task's own
        (:data:`TASK_RECIPES`) and for other tasks ``"default"``."""
        task = get_task(task)
        recipe = recipe or TASK_RECIPES.get(task.name, "default")
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; recipes are {', '.join(RECIPES)}")
        return cls(**{**RECIPES[recipe], "task": task, **overrides})

    @classmethod
    def lab(cls, **overrides) -> "TrainConfig":
        """The course lab's recipe: batch 64, constant Adam 1e-3, MSE box loss at weight 1, float32, 10 passes."""
        return cls.for_task(overrides.pop("task", None), recipe="lab", **overrides)

    @classmethod
    def fast(cls, **overrides) -> "TrainConfig":
        """The default recipe cut to 4 passes, warmup 0.2 pass, no label smoothing: the lab's quality in a fraction of its time."""
        return cls.for_task(overrides.pop("task", None), recipe="fast", **overrides)

    def recipe_label(self) -> str:
        """The closest named recipe with the fields that differ from it, e.g. ``"default"``,
        ``"default (epochs=1)"``, ``"lab"``; ``"default"`` is the task's own recipe, another
        task's shows as ``"sized recipe"``. Seed, task and speed-only fields are not part of it."""
        mine = _recipe_fields(self)
        own = TASK_RECIPES.get(self.task.name, "default")
        best = None
        for name in sorted(RECIPES, key=lambda r: r != own):  # the task's own recipe wins ties
            theirs = _recipe_fields(TrainConfig.for_task(self.task, recipe=name))
            differ = sorted(k for k in mine if mine[k] != theirs[k])
            if best is None or len(differ) < len(best[1]):
                label = "default" if name == own else (name if name in ("fast", "lab") else f"{name} recipe")
                best = (label, differ)
        label, differ = best
        return label + (f" ({', '.join(f'{k}={mine[k]!r}' for k in differ)})" if differ else "")

    def to_dict(self) -> dict:
        """Every field, JSON-ready (the task as :meth:`Task.to_dict`)."""
        return {**dataclasses.asdict(self), "task": self.task.to_dict()}

    @classmethod
    def from_dict(cls, fields: dict) -> "TrainConfig":
        """The config of :meth:`to_dict`, as ``metrics.json`` records it."""
        return cls(**fields)


def preset(name: str, **overrides) -> TrainConfig:
    """``"default"`` (the task's own recipe, :meth:`TrainConfig.for_task`), ``"fast"`` or ``"lab"``, with overrides on top."""
    if name not in ("default", "fast", "lab"):
        raise ValueError(f"unknown preset {name!r}; choose one of default, fast, lab")
    task = overrides.pop("task", None)
    return TrainConfig.for_task(task, recipe=None if name == "default" else name, **overrides)


def _recipe_fields(config: TrainConfig) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in _NOT_RECIPE}


def _check_choice(name, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


assert set(TASK_RECIPES) <= set(TASKS)
