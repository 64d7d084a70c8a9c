"""Recipes over several seeds: mean and spread of the final quality, with and without TTA.

    python benchmarks/seed_table.py [--seeds 0 1 2] [--split test] [--json FILE] lab default fast 'ls={"label_smoothing": 0.1}'

Each recipe (a preset name or NAME=JSON of TrainConfig overrides) is trained once per seed,
one run after another in this process, and scored on the fixed canvases of ``--split``
(placement seed 0, the same canvases for every run), plainly and with test-time
augmentation. Prints one line per run, then a Markdown table: per recipe the mean over
seeds and, in brackets, the lowest and highest. Tune on ``--split validation``; the test
canvases are for the final table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics

from time_to_quality import recipe

from mnist_loc.evaluation import evaluate
from mnist_loc.experiment import run

COLUMNS = (
    ("accuracy", "accuracy", "{:.4f}"), ("mean_iou", "mean IoU", "{:.4f}"), ("iou_at_60", "IoU ≥ 0.6", "{:.2%}"),
    ("tta_accuracy", "accuracy, TTA", "{:.4f}"), ("tta_mean_iou", "mean IoU, TTA", "{:.4f}"), ("train_seconds", "train s", "{:.0f}"),
)


def one_run(config, split: str, data_dir=None) -> dict:
    done = run(config, split=split, data_dir=data_dir)
    plain = done.report
    tta = evaluate(done.model, done.digits, task=config.task, split=split, tta=True)
    return {
        "accuracy": plain["accuracy"], "mean_iou": plain["mean_iou"], "iou_at_60": plain["iou_at_60"],
        "tta_accuracy": tta["accuracy"], "tta_mean_iou": tta["mean_iou"], "train_seconds": done.train_seconds,
        "eval_seconds": plain["eval_seconds"], "tta_eval_seconds": tta["eval_seconds"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def table(results: dict) -> str:
    lines = ["| recipe | seeds | " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|---|---|" + "---:|" * len(COLUMNS)]
    for name, runs in results.items():
        cells = []
        for key, _, fmt in COLUMNS:
            values = [r[key] for r in runs.values()]
            cells.append(f"{fmt.format(statistics.mean(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})")
        lines.append(f"| {name} | {', '.join(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+", help="presets (lab, default, fast) or NAME=JSON of TrainConfig overrides")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--json", help="also write every run's numbers here")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    results = {}
    for spec in args.recipes:
        for seed in args.seeds:
            name, config = recipe(spec, seed)
            row = one_run(config, args.split, args.data_dir)
            results.setdefault(name, {})[str(seed)] = row
            print(f"RUN {name} seed {seed} {args.split}: " + json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"split": args.split, "results": results}, f, indent=1)
    print(f"\n{args.split} canvases (placement seed 0), mean over seeds (lowest–highest):\n")
    print(table(results))


if __name__ == "__main__":
    main()
