"""Train recipe variants and print their validation numbers: the runs behind the recipe tables.

    python benchmarks/recipe_sweep.py '{"scale": [0.5, 2], "box": "ink"}' '{"scale": [0.5, 2], "box": "ink", "epochs": 14}'

Each argument is a JSON object of ``TrainConfig`` overrides (``"task": "cluttered-60"`` or a
task's fields included); every variant is trained from scratch in this process by
``mnist_loc.run``, one after another, and scored on the fixed validation canvases of its
own task (seed 0): recipes are tuned on validation, the test canvases are kept for the
final tables. ``--test`` scores on test instead.
Prints one line each:

    RESULT {overrides} train_s=... train_cpu_s=... accuracy=... mean_iou=... iou_at_50=... small/medium/large mean IoU ...
"""

from __future__ import annotations

import json
import resource
import sys

from mnist_loc.config import TrainConfig
from mnist_loc.experiment import run


def main(argv: list[str]) -> None:
    split = "test" if "--test" in argv else "validation"
    variants = [a for a in argv if a != "--test"]
    if not variants:
        sys.exit(__doc__)
    for text in variants:
        overrides = json.loads(text)
        config = TrainConfig(**overrides)
        done = run(config, split=split)
        r = done.report
        sizes = " ".join(
            f"{name}={row['mean_iou']:.4f}/{row['accuracy']:.4f}" for name, row in r.get("by_size", {}).items() if row["count"]
        )
        print(
            f"RESULT {json.dumps(overrides)} split={split} train_s={done.train_seconds:.1f} train_cpu_s={done.train_cpu_seconds:.1f} accuracy={r['accuracy']:.4f} "
            f"mean_iou={r['mean_iou']:.4f} iou_at_50={r['iou_at_50']:.4%} iou_at_75={r['iou_at_75']:.4%} "
            f"| by size (mean IoU/accuracy): {sizes} | peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
