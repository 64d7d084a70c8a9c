"""One table of many runs: read run folders (``metrics.json``), one row per task x model x recipe.

A run folder is self-contained, so runs made anywhere (another machine, a scheduler's array
job, a notebook) are compared by copying their folders next to each other and listing them:
``python -m mnist_loc table runs/*``. Each kind of answer names its own columns
(``COLUMNS`` in :mod:`mnist_loc.localization` and :mod:`mnist_loc.detection`).
"""

from __future__ import annotations

from .artifacts import read_metrics, spread
from .evaluation import KINDS
from .task import Task


def _columns():
    """Every kind's columns, then the training times: ``(title, metrics key, format, scale, offset)``."""
    timing = (("train s", "train_seconds", "{:.0f}", 1.0, 0.0), ("CPU s", "train_cpu_seconds", "{:.0f}", 1.0, 0.0))
    return tuple(column for kind in KINDS.values() for column in kind.COLUMNS) + timing


def run_key(metrics: dict) -> tuple[str, str, str]:
    """``(task, model, recipe)`` of a run: the task's name (or its one-line description),
    the model's name, the recipe's label."""
    task = Task.from_dict(metrics["config"]["task"])
    model = metrics.get("model", {}).get("name", "mnist_loc")
    return task.name or task.describe(), model, metrics.get("recipe", "?")


def runs_table(folders) -> str:
    """A Markdown table of run folders: one row per task x model x recipe, in first-seen
    order, with the number of seeds and, for error %, accuracy, mean IoU, IoU >= 0.5 (single-digit
    runs), COCO AP, AP50, count accuracy, fully right (detection runs) and training seconds
    (wall and CPU), the mean over runs and (lowest–highest); "–" where a run has no such number."""
    groups: dict = {}
    for folder in folders:
        metrics = read_metrics(folder)
        scores = [key for _, key, *_ in KINDS[Task.from_dict(metrics["config"]["task"]).kind].COLUMNS]
        missing = [key for key in dict.fromkeys(scores) if key not in metrics]
        if missing:
            raise ValueError(f"{folder}/metrics.json lacks {', '.join(missing)}: not written by mnist_loc's run()")
        groups.setdefault(run_key(metrics), []).append(metrics)
    if not groups:
        raise ValueError("no run folders given")
    columns = _columns()
    header = ["task", "model", "recipe", "seeds", *(title for title, *_ in columns)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|---:|" + "---:|" * len(columns)]
    for (task, model, recipe), runs in groups.items():
        seeds = len({r["config"].get("seed") for r in runs})
        cells = [spread([None if r.get(key) is None else offset + scale * r[key] for r in runs], fmt)
                 for _, key, fmt, scale, offset in columns]
        lines.append(f"| {task} | {model} | {recipe} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
