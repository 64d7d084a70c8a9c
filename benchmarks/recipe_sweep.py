"""Train one recipe variant and print its test numbers: the runs behind the recipe table.

    python benchmarks/recipe_sweep.py '{"epochs": 14, "learning_rate": 0.006, "box_loss_weight": 0.5}' [...]

Each argument is a JSON object of ``TrainConfig`` overrides; every variant is trained
from scratch in this process, one after another, and scored on the fixed test canvases
(seed 0) and on another placement of the test digits (seed 7). Prints one line each:

    RESULT {overrides} train_s=... accuracy=... mean_iou=... iou_at_60=... | seed 7: ...
"""

from __future__ import annotations

import json
import resource
import sys

from mnist_loc.config import TrainConfig
from mnist_loc.data import make_dataset
from mnist_loc.evaluation import evaluate
from mnist_loc.training import EpochProgress, train


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    for text in argv:
        overrides = json.loads(text)
        config = TrainConfig(**overrides)
        result = train(config, verbose=0, callbacks=[EpochProgress(config.epochs)])
        scores = [evaluate(result.model, make_dataset("test", batch_size=500, seed=seed)) for seed in (0, 7)]
        line = lambda r: f"accuracy={r['accuracy']:.4f} mean_iou={r['mean_iou']:.4f} iou_at_60={r['iou_at_60']:.4%}"  # noqa: E731
        print(
            f"RESULT {json.dumps(overrides)} train_s={result.train_seconds:.1f} {line(scores[0])} | seed 7: {line(scores[1])} "
            f"| peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
