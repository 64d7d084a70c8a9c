"""The one config of a training run: a recipe and the task it trains on.

Pure Python (no TensorFlow), so the command line can parse and check its flags
before loading anything heavy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .task import TASKS, Task, check_positive_int, get_task

BOX_LOSSES = ("mse", "l1", "iou_l1")  # see model.BoxLoss


# mnist_loc's recipe for each named task, where it differs from the defaults. The sized tasks'
# recipe was chosen on the validation canvases of task (b) over seeds 0 / 1 / 2
# (benchmarks/recipe_sweep.py): its mean IoU gain over the previous one (peak LR 1e-2, no weight
# averaging, no label smoothing) is beyond the seeds' spread, its accuracy is not higher. The
# numbers: docs/details.md, "Harder tasks".
_SIZED_TASK_RECIPE: dict = {"epochs": 20, "box_loss_weight": 1.0, "learning_rate": 5e-3, "label_smoothing": 0.1, "ema_momentum": 0.999}
# The literature's tasks keep the defaults: on cluttered-60's validation canvases over seeds 0 / 1
# an EMA of the weights (0.999) gave the same error within the seeds' spread and a lower mean IoU
# beyond it. 24 passes did better there (docs/testbed.md, "The literature's tasks: results") but
# are not the recipe until the notebook's table is retrained with them.
RECIPES: dict = {
    "course": {}, "sized": _SIZED_TASK_RECIPE, "sized-cluttered": _SIZED_TASK_RECIPE,
    "translated-60": {}, "cluttered-60": {}, "cluttered-100": {},
}
assert set(RECIPES) == set(TASKS)
_SPEED_ONLY = ("validation_batch_size", "validation_canvases", "steps_per_execution")  # the weights do not depend on them
_LOOSE_TASK_FIELDS = ("dataset", "canvas_size", "scale", "box", "clutter")


@dataclass(frozen=True)
class TrainConfig:
    """Every choice of a training run. The defaults are mnist_loc's recipe.

    Against the course lab (``TrainConfig.lab()``: batch 64, constant Adam 1e-3, MSE
    box loss at weight 1, float32, 10 passes, no label smoothing) the recipe changes
    six things, each measured in the notebook's recipe table: a bfloat16 trunk (where the
    hardware computes bfloat16 natively; float32 elsewhere), batch
    128, warmup + cosine decay peaking at 1e-2, the box loss ``1 - IoU + L1`` at weight
    0.5 instead of MSE, label smoothing 0.1, and 12 passes. ``steps_per_execution`` only
    changes speed. Data placement is vectorized in ``data`` whatever the config.
    """

    epochs: int = 12
    steps_per_epoch: int | None = None  # None: one full pass over the 55,000 training digits
    batch_size: int = 128
    learning_rate: float = 1e-2  # peak of the schedule
    schedule: str = "warmup_cosine"  # linear warmup, cosine decay to 0; or "constant"
    warmup_epochs: float = 1.0
    box_loss: str = "iou_l1"  # "mse" (the lab's), "l1" or "iou_l1"; see model.BoxLoss
    box_loss_weight: float = 0.5  # classification loss has weight 1
    # bfloat16 trunk (Dense layers and heads stay float32). None: where the hardware computes
    # bfloat16 natively (model.native_bfloat16), else float32: oneDNN's emulation on an AVX2-only
    # CPU trains the course model about 5x slower per step (benchmarks/precision_speed.py).
    mixed_precision: bool | None = None
    # Of the classification targets (the lab's is 0). Chosen on validation over three seeds: mean
    # IoU rose beyond the seeds' spread, accuracy stayed within it (docs/details.md, "Time to
    # quality"); a softer classification loss seems to leave the shared trunk more room for the box.
    label_smoothing: float = 0.1
    ema_momentum: float = 0.0  # > 0: validate with and keep an EMA of the weights (Polyak averaging)
    task: Task = Task()  # what the canvases are (a Task, a name in TASKS, or Task.to_dict()); the course task
    seed: int = 0
    validation_batch_size: int = 500
    # Validation canvases scored after each epoch: the first N of the fixed validation canvases
    # (None: all of them, 5,000 for the course task). Fewer make short runs cheaper; the weights
    # do not change.
    validation_canvases: int | None = None
    deterministic: bool = True  # TensorFlow op determinism: same seed, same weights
    # Training steps per call into TensorFlow, at most: the largest divisor of the epoch's
    # steps not above this (13 of 429 by default; 1 under a tf.distribute strategy). Saves
    # Python's per-step overhead (about 8% more images/s here); the weights do not change.
    steps_per_execution: int = 16

    def __post_init__(self):
        check_positive_int(self.epochs, "epochs", minimum=0)
        if self.steps_per_epoch is not None:
            check_positive_int(self.steps_per_epoch, "steps_per_epoch")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.validation_batch_size, "validation_batch_size")
        if self.validation_canvases is not None:
            check_positive_int(self.validation_canvases, "validation_canvases")
        task = Task.from_dict(self.task) if isinstance(self.task, dict) else get_task(self.task)
        object.__setattr__(self, "task", task)
        check_positive_int(self.seed, "seed", minimum=0)
        check_positive_int(self.steps_per_execution, "steps_per_execution")
        if self.mixed_precision not in (None, True, False):
            raise ValueError(f"mixed_precision must be True, False or None (where bfloat16 is native), got {self.mixed_precision!r}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if self.schedule not in ("warmup_cosine", "constant"):
            raise ValueError(f"schedule must be 'warmup_cosine' or 'constant', got {self.schedule!r}")
        if not (isinstance(self.warmup_epochs, (int, float)) and self.warmup_epochs >= 0):
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {self.box_loss!r}")
        for name in ("label_smoothing", "ema_momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        if not (isinstance(self.box_loss_weight, (int, float)) and self.box_loss_weight > 0):
            raise ValueError(f"box_loss_weight must be a positive number, got {self.box_loss_weight!r}")

    @classmethod
    def lab(cls, **overrides) -> "TrainConfig":
        """The course lab's recipe, for comparison."""
        recipe = dict(
            epochs=10, batch_size=64, learning_rate=1e-3, schedule="constant", warmup_epochs=0,
            box_loss="mse", box_loss_weight=1.0, mixed_precision=False, label_smoothing=0.0,
        )
        return cls(**{**recipe, **overrides})

    @classmethod
    def fast(cls, **overrides) -> "TrainConfig":
        """A short recipe that reaches the lab's final quality in a fraction of its time.

        The default recipe cut to 4 passes, warmup 0.2 of a pass, no label smoothing (as
        measured by ``benchmarks/time_to_quality.py``; 3 passes ended short of the lab's
        accuracy, at 0.973 on validation).
        """
        recipe = dict(epochs=4, warmup_epochs=0.2, label_smoothing=0.0)
        return cls(**{**recipe, **overrides})

    @classmethod
    def for_task(cls, task=None, *, recipe: str | None = None, **overrides) -> "TrainConfig":
        """mnist_loc's recipe for a task, with ``overrides`` on top.

        ``task``: a :class:`~mnist_loc.task.Task` or a name in ``TASKS`` (default the
        course task). The recipe is ``RECIPES[recipe]``; ``recipe`` defaults to the task's
        name, and a task of your own (no name) gets the defaults unless you name one,
        e.g. ``for_task(TASKS["sized"].replace(clutter=2), recipe="sized")``.
        """
        task = get_task(task)
        recipe = recipe or task.name or "course"
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; recipes exist for {', '.join(RECIPES)}")
        return cls(**{**RECIPES[recipe], "task": task, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        """A named recipe, with overrides on top: ``"default"`` (mnist_loc's recipe for the
        task, :meth:`for_task`), ``"fast"`` (:meth:`fast`) or ``"lab"`` (:meth:`lab`)."""
        recipes = {"default": cls.for_task, "fast": cls.fast, "lab": cls.lab}
        if name not in recipes:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(recipes)}")
        return recipes[name](**overrides)

    def recipe_label(self) -> str:
        """A short name of the recipe, seed and task aside: the closest preset, with the
        fields that differ from it, e.g. ``"default"``, ``"default (epochs=1)"``, ``"lab"``,
        or ``"sized recipe"`` for another task's recipe (a task of your own trained with
        ``for_task(..., recipe="sized")``). Fields that leave the weights as they are
        (validation and steps per call) are not part of it."""
        mine = {k: v for k, v in self.to_dict().items() if k not in ("seed", "task", *_SPEED_ONLY)}
        own = self.task.name or "course"
        candidates = [("default" if r == own else f"{r} recipe", TrainConfig.for_task(self.task, recipe=r, seed=self.seed)) for r in RECIPES]
        candidates += [(name, TrainConfig.preset(name, task=self.task, seed=self.seed)) for name in ("fast", "lab")]
        best = None
        for name, preset in candidates:
            preset = preset.to_dict()
            differ = sorted(k for k in mine if mine[k] != preset[k])
            if best is None or len(differ) < len(best[1]) or (len(differ) == len(best[1]) and name == "default"):
                best = (name, differ)
        name, differ = best
        return name + (f" ({', '.join(f'{k}={mine[k]!r}' for k in differ)})" if differ else "")

    def to_dict(self) -> dict:
        """Every field, JSON-ready (the task as :meth:`Task.to_dict`)."""
        return {**dataclasses.asdict(self), "task": self.task.to_dict()}

    @classmethod
    def from_dict(cls, fields: dict) -> "TrainConfig":
        """The config of :meth:`to_dict` (as ``metrics.json`` records it); a config written
        before tasks were values (loose ``dataset``, ``canvas_size``, ``scale``, ``box``,
        ``clutter``) has them folded into its task."""
        fields = dict(fields)
        loose = {k: fields.pop(k) for k in _LOOSE_TASK_FIELDS if k in fields}
        if loose and "task" not in fields:
            fields["task"] = Task(**loose)
        return cls(**fields)
