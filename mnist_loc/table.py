"""One table of many runs: read run folders (``metrics.json``), one row per task x model x recipe.

Pure Python. A run folder is self-contained, so runs made anywhere (another machine, a
scheduler's array job, a notebook) are compared by copying their folders next to each
other and listing them: ``python -m mnist_loc table runs/*``.
"""

from __future__ import annotations

import statistics

from .artifacts import read_metrics
from .task import Task

COLUMNS = (
    ("error %", lambda m: 100.0 * (1.0 - m["accuracy"]), "{:.2f}"),
    ("accuracy", lambda m: m["accuracy"], "{:.4f}"),
    ("mean IoU", lambda m: m["mean_iou"], "{:.4f}"),
    ("IoU ≥ 0.5", lambda m: 100.0 * m["iou_at_50"], "{:.2f}%"),
    ("train s", lambda m: m["train_seconds"], "{:.0f}"),
    ("CPU s", lambda m: m["train_cpu_seconds"], "{:.0f}"),
)


def run_key(metrics: dict) -> tuple[str, str, str]:
    """``(task, model, recipe)`` of a run: the task's name (or its one-line description),
    the model's name, the recipe's label."""
    task = Task.from_dict(metrics["config"]["task"])
    model = metrics.get("model", {}).get("name", "mnist_loc")
    return task.name or task.describe(), model, metrics.get("recipe", "?")


def _summary(values, fmt: str) -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def runs_table(folders) -> str:
    """A Markdown table of run folders: one row per task x model x recipe, in first-seen
    order, with the number of seeds and, for error %, accuracy, mean IoU, IoU >= 0.5 and
    training seconds (wall and CPU), the mean over runs and (lowest–highest)."""
    groups: dict = {}
    for folder in folders:
        metrics = read_metrics(folder)
        groups.setdefault(run_key(metrics), []).append(metrics)
    if not groups:
        raise ValueError("no run folders given")
    header = ["task", "model", "recipe", "seeds", *(title for title, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|---:|" + "---:|" * len(COLUMNS)]
    for (task, model, recipe), runs in groups.items():
        seeds = len({r["config"].get("seed") for r in runs})
        cells = [_summary([get(r) for r in runs], fmt) for _, get, fmt in COLUMNS]
        lines.append(f"| {task} | {model} | {recipe} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
