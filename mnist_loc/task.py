"""What the canvases are: a task is a frozen value, checked on construction.

Pure Python (no TensorFlow, no model): ``placement`` draws a task's canvases, ``config``
holds one in a training recipe, ``task.json`` beside a saved model is one. Its fields, the
clutter rules (``clutter_overlap``: mnist_loc's or DeepMind's ``mnist_cluttered.lua``), the
placement rules (``rules``: ``"mnist_loc"``, AIR's ``"air"``, hukkelas' ``"mnist-detection"``)
and the split rules (``splits``) are described in docs/testbed.md. Boxes are ``[xmin, ymin,
xmax, ymax]`` normalized to the canvas everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral

DIGIT_SIZE = 28
BOX_DEFINITIONS = ("patch", "ink")  # the pasted square, or the tightest box around the ink
SPLIT_RULES = ("tfds", "mnist-cluttered")
MIN_SCALE = 0.25
# Datasets whose tfds records are keyed by their index in the original files, so that
# splits="mnist-cluttered" can restore the file order.
FILE_ORDER_DATASETS = ("mnist", "fashion_mnist")
MNIST_CLUTTERED_VALIDATION = 10_000
KINDS = {"mnist_loc": "localization", "air": "detection", "mnist-detection": "detection"}  # each rule's kind of answer
PLACEMENT_RULES = tuple(KINDS)
SCENE_RULES = tuple(rule for rule, kind in KINDS.items() if kind == "detection")  # several digits, ``canvases`` per split
DETECTION_SIDES = (15, 99)  # generate_data.py's randint(15, 100): digit sides 15 .. 99 px
DETECTION_MAX_IOU = 0.25  # a new digit's square must overlap every earlier digit's box less


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as int, or raise a clear error if it is not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_canvas_size(canvas_size) -> int:
    """Return ``canvas_size`` as int; it must be an integer >= 28 (a digit must fit). Raises ValueError."""
    try:
        return check_positive_int(canvas_size, "canvas_size", minimum=DIGIT_SIZE)
    except TypeError as error:
        raise ValueError(str(error)) from None


def _check_count(count) -> tuple:
    try:
        lo, hi = (check_positive_int(v, "count", minimum=0) for v in count)
    except TypeError:
        raise ValueError(f"count must be a pair (lo, hi) of integers, got {count!r}") from None
    if not (lo <= hi and hi >= 1):
        raise ValueError(f"count must satisfy 0 <= lo <= hi, hi >= 1, got ({lo}, {hi})")
    return lo, hi


@dataclass(frozen=True)
class Task:
    """Everything that defines the canvases of a localization task.

    Fields:
      dataset: a tfds image-classification dataset of 28x28x1 uint8 digits (``"mnist"``,
        ``"fashion_mnist"``, ``"kmnist"``, ...).
      canvas_size: ``S``, the side of the square black canvas (>= 28).
      scale: ``(lo, hi)``; each digit is resized by a factor drawn log-uniformly in it
        (``0.25 <= lo <= hi``, ``28 * hi <= S``); ``(1, 1)`` keeps 28 px.
      box: ``"patch"`` (the pasted square) or ``"ink"`` (tightest box around pixels >= 0.1).
      clutter: distractor pieces per canvas (>= 0).
      clutter_size: side of each piece, a crop of a 28x28 digit (1..28; 8 in the papers).
      clutter_overlap: whether pieces may overlap the target (see the module doc).
      splits: ``"tfds"`` or ``"mnist-cluttered"`` (see the module doc).
      count: ``(lo, hi)`` digits per canvas, drawn uniformly per canvas; ``(1, 1)`` for the
        ``"mnist_loc"`` rules.
      rules: ``"mnist_loc"``, ``"air"`` or ``"mnist-detection"`` (see the module doc; the
        last two ignore ``scale``). The rules alone decide the task's :attr:`kind`.
      canvases: ``(train pass, validation, test)`` canvases per split, for the ``"air"`` and
        ``"mnist-detection"`` rules; None (``"mnist_loc"``): one canvas per digit of the split.
    """

    dataset: str = "mnist"
    canvas_size: int = 75
    scale: tuple = (1.0, 1.0)
    box: str = "patch"
    clutter: int = 0
    clutter_size: int = 8
    clutter_overlap: bool = False
    splits: str = "tfds"
    count: tuple = (1, 1)
    rules: str = "mnist_loc"
    canvases: tuple | None = None

    def __post_init__(self):
        if not (isinstance(self.dataset, str) and self.dataset):
            raise ValueError(f"dataset must be a tfds dataset name, got {self.dataset!r}")
        size = check_canvas_size(self.canvas_size)
        try:
            lo, hi = (float(v) for v in self.scale)
        except (TypeError, ValueError):
            raise ValueError(f"scale must be a pair (lo, hi) of numbers, got {self.scale!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and MIN_SCALE <= lo <= hi):
            raise ValueError(f"scale must satisfy {MIN_SCALE} <= lo <= hi, got ({lo:g}, {hi:g})")
        if DIGIT_SIZE * hi > size:
            raise ValueError(f"scale hi={hi:g} makes a {DIGIT_SIZE * hi:g} px digit, larger than the {size} px canvas")
        if self.box not in BOX_DEFINITIONS:
            raise ValueError(f"box must be one of {BOX_DEFINITIONS}, got {self.box!r}")
        check_positive_int(self.clutter, "clutter", minimum=0)
        check_positive_int(self.clutter_size, "clutter_size")
        if self.clutter_size > DIGIT_SIZE:
            raise ValueError(f"clutter_size must be <= {DIGIT_SIZE} (a crop of a digit), got {self.clutter_size}")
        if not isinstance(self.clutter_overlap, bool):
            raise TypeError(f"clutter_overlap must be True or False, got {self.clutter_overlap!r}")
        if self.splits not in SPLIT_RULES:
            raise ValueError(f"splits must be one of {SPLIT_RULES}, got {self.splits!r}")
        if self.splits == "mnist-cluttered" and self.dataset not in FILE_ORDER_DATASETS:
            raise ValueError(f"splits='mnist-cluttered' needs the original file order, known for {FILE_ORDER_DATASETS}, not {self.dataset!r}")
        count = _check_count(self.count)
        if self.rules not in PLACEMENT_RULES:
            raise ValueError(f"rules must be one of {PLACEMENT_RULES}, got {self.rules!r}")
        canvases = None if self.canvases is None else tuple(self.canvases)
        if self.rules in SCENE_RULES:
            if self.box != "ink" or self.clutter:
                raise ValueError(f"rules={self.rules!r} makes tight ink boxes and no clutter: set box='ink', clutter=0")
            if canvases is None or len(canvases) != 3:
                raise ValueError(f"rules={self.rules!r} needs canvases=(train pass, validation, test), got {self.canvases!r}")
            if self.rules == "mnist-detection" and size <= DETECTION_SIDES[1]:
                raise ValueError(f"rules='mnist-detection' places digits up to {DETECTION_SIDES[1]} px: canvas_size must be > {DETECTION_SIDES[1]}, got {size}")
            canvases = tuple(check_positive_int(n, "canvases") for n in canvases)
        elif count != (1, 1) or canvases is not None:
            raise ValueError("rules='mnist_loc' places one digit per canvas: count=(1, 1), canvases=None")
        for name, value in (("canvas_size", size), ("scale", (lo, hi)), ("clutter", int(self.clutter)), ("clutter_size", int(self.clutter_size)), ("count", count), ("canvases", canvases)):
            object.__setattr__(self, name, value)  # normalized: ints, a tuple of floats

    @property
    def kind(self) -> str:
        """``"localization"`` (one digit per canvas: its class and box) or ``"detection"``
        (several: boxes, classes, scores and a count), decided by ``rules`` alone."""
        return KINDS[self.rules]

    @property
    def max_count(self) -> int:
        """``K``: the most digits a canvas holds; multi-digit targets are padded to it."""
        return self.count[1]

    def to_dict(self) -> dict:
        """Every field, JSON-ready (tuples as lists)."""
        fields = {**dataclasses.asdict(self), "scale": list(self.scale), "count": list(self.count)}
        return {**fields, "canvases": None if self.canvases is None else list(self.canvases)}

    @classmethod
    def from_dict(cls, fields: dict) -> "Task":
        """The task of :meth:`to_dict`, or of a ``task.json`` (its ``class_names`` are
        ignored). Unknown keys are refused."""
        fields = {k: v for k, v in fields.items() if k != "class_names"}
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown task field(s) {', '.join(unknown)}")
        return cls(**fields)

    @property
    def name(self) -> str | None:
        """The name of this task in :data:`TASKS`, or None for a task of your own."""
        return next((name for name, task in TASKS.items() if task == self), None)

    def describe(self) -> str:
        """One line: what the canvases are."""
        lo, hi = self.scale
        parts = [f"{self.dataset} on {self.canvas_size}x{self.canvas_size}"]
        if self.rules in SCENE_RULES:
            train, validation, test = self.canvases
            rule = "AIR's rules" if self.rules == "air" else "generate_data.py's rules, sides {}-{} px".format(*DETECTION_SIDES)
            parts += [f"{self.count[0]}-{self.count[1]} digits by {rule}", "ink boxes",
                      f"{train:,} training canvases a pass, {validation:,} validation, {test:,} test"]
            return (f"{self.name}: " if self.name else "") + ", ".join(parts)
        parts.append("28 px digits" if (lo, hi) == (1.0, 1.0) else f"scale {lo:g}-{hi:g}")
        parts.append(f"{self.box} boxes")
        if self.clutter:
            rule = "may overlap the target" if self.clutter_overlap else "outside the target"
            parts.append(f"{self.clutter} distractors of {self.clutter_size}x{self.clutter_size} ({rule})")
        parts.append("mnist-cluttered splits 50k/10k/10k" if self.splits == "mnist-cluttered" else "tfds splits")
        label = f"{self.name}: " if self.name else ""
        return label + ", ".join(parts)

    def replace(self, **changes) -> "Task":
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)


_LITERATURE = dict(clutter_overlap=True, splits="mnist-cluttered")

TASKS: dict = {
    # The course lab's canvases: a 28 px digit anywhere on 75x75, its 28x28 patch as the box.
    "course": Task(),
    # mnist_loc's harder tasks: digits resized 0.5-2x with tight ink boxes, then with clutter.
    "sized": Task(scale=(0.5, 2.0), box="ink"),
    "sized-cluttered": Task(scale=(0.5, 2.0), box="ink", clutter=4),
    # The literature's, by DeepMind's mnist-cluttered: 60x60 translated MNIST (RAM, Mnih et
    # al. 2014), 60x60 with 4 distractors (RAM), 100x100 with 8 (RAM, DRAW).
    "translated-60": Task(canvas_size=60, splits="mnist-cluttered"),
    "cluttered-60": Task(canvas_size=60, clutter=4, **_LITERATURE),
    "cluttered-100": Task(canvas_size=100, clutter=8, **_LITERATURE),
    # Several digits: AIR's multi-MNIST (Eslami et al. 2016), 0-2 digits on 50x50.
    "multi-mnist": Task(canvas_size=50, box="ink", count=(0, 2), rules="air", canvases=(60_000, 5_000, 10_000)),
    # Dense scenes: hukkelas/MNIST-ObjectDetection (TDT4265's SSD300 set), 1-20 digits of 15-99 px on 300x300.
    "mnist-detection": Task(canvas_size=300, box="ink", count=(1, 20), rules="mnist-detection", canvases=(10_000, 1_000, 1_000)),
}


def get_task(task) -> Task:
    """A :class:`Task` from a task or a name in :data:`TASKS` (None: ``"course"``)."""
    if task is None:
        return TASKS["course"]
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; named tasks are {', '.join(TASKS)}")
        return TASKS[task]
    raise TypeError(f"task must be a Task or the name of one, got {task!r}")
