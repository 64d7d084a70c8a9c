"""One table of many runs: read run folders (``metrics.json``), one row per task x model x recipe.

Pure Python. A run folder is self-contained, so runs made anywhere (another machine, a
scheduler's array job, a notebook) are compared by copying their folders next to each
other and listing them: ``python -m mnist_loc table runs/*``.
"""

from __future__ import annotations

import statistics

from .artifacts import read_metrics
from .task import Task

def _get(key, scale=1.0, offset=0.0):
    """A column's value of one run's metrics, None where that kind of run has none."""
    return lambda m: None if m.get(key) is None else offset + scale * m[key]


# Single-digit runs fill the first four columns, detection runs the next four ("–" elsewhere).
COLUMNS = (
    ("error %", _get("accuracy", -100.0, 100.0), "{:.2f}"),
    ("accuracy", _get("accuracy"), "{:.4f}"),
    ("mean IoU", _get("mean_iou"), "{:.4f}"),
    ("IoU ≥ 0.5", _get("iou_at_50", 100.0), "{:.2f}%"),
    ("AP", _get("ap"), "{:.4f}"),
    ("AP50", _get("ap50"), "{:.4f}"),
    ("count acc", _get("count_accuracy", 100.0), "{:.2f}%"),
    ("fully right", _get("fully_right", 100.0), "{:.2f}%"),
    ("train s", _get("train_seconds"), "{:.0f}"),
    ("CPU s", _get("train_cpu_seconds"), "{:.0f}"),
)


def run_key(metrics: dict) -> tuple[str, str, str]:
    """``(task, model, recipe)`` of a run: the task's name (or its one-line description),
    the model's name, the recipe's label."""
    task = Task.from_dict(metrics["config"]["task"])
    model = metrics.get("model", {}).get("name", "mnist_loc")
    return task.name or task.describe(), model, metrics.get("recipe", "?")


def _summary(values, fmt: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def runs_table(folders) -> str:
    """A Markdown table of run folders: one row per task x model x recipe, in first-seen
    order, with the number of seeds and, for error %, accuracy, mean IoU, IoU >= 0.5 (single-digit
    runs), COCO AP, AP50, count accuracy, fully right (detection runs) and training seconds
    (wall and CPU), the mean over runs and (lowest–highest); "–" where a run has no such number."""
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


DETECTION_COLUMNS = (
    ("AP@[.50:.95]", "ap", "{:.4f}", 1.0), ("AP50", "ap50", "{:.4f}", 1.0), ("AP75", "ap75", "{:.4f}", 1.0),
    ("AR@10", "ar10", "{:.4f}", 1.0), ("AR@20", "ar20", "{:.4f}", 1.0), ("count acc", "count_accuracy", "{:.2f}%", 100.0),
    ("fully right", "fully_right", "{:.2f}%", 100.0), ("train s", "train_seconds", "{:.0f}", 1.0),
    ("CPU s", "train_cpu_seconds", "{:.0f}", 1.0),
)


def detection_table(folders) -> str:
    """A Markdown table of detection run folders: one row per run (its seed), a row of their
    means (lowest–highest), then per-class AP50 as the mean over the runs."""
    runs = [read_metrics(folder) for folder in folders]
    if not runs or any("ap" not in m for m in runs):
        raise ValueError("detection_table needs run folders of a detection task")
    header = ["run", *(title for title, *_ in DETECTION_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(DETECTION_COLUMNS)]
    for m in runs:
        cells = [fmt.format(scale * m[key]) if key in m else "–" for _, key, fmt, scale in DETECTION_COLUMNS]  # "–": a run saved before the metric
        lines.append(f"| seed {m['config'].get('seed')} | " + " | ".join(cells) + " |")
    if len(runs) > 1:
        cells = [_summary([scale * m[key] for m in runs], fmt) if all(key in m for m in runs) else "–"
                 for _, key, fmt, scale in DETECTION_COLUMNS]
        lines.append(f"| **mean of {len(runs)}** | " + " | ".join(cells) + " |")
    classes = list(runs[0]["ap50_per_class"])
    names = runs[0].get("task", {}).get("class_names") or classes
    lines += ["", "| AP50 per class | " + " | ".join(str(n) for n in names) + " |", "|---|" + "---:|" * len(classes)]
    means = [statistics.mean(m["ap50_per_class"][c] for m in runs) if all(m["ap50_per_class"][c] is not None for m in runs) else None
             for c in classes]
    lines.append(f"| mean of {len(runs)} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in means) + " |")
    return "\n".join(lines)
