"""How faithful are the Grad-CAM heatmaps of a trained model? The three measures of
``mnist_loc.explain.faithfulness`` for both heads on a task's fixed test canvases.

    python benchmarks/explain_faithfulness.py --model runs/default/model.keras [--canvases 1000] [--data-dir DIR] [--json F] [--picture F.png]

The task is the model's own (its ``task.json``). Prints, per head: the mean share of the map
inside the true box (and the box's share of the canvas, what a uniform map scores), the
deletion check (score intact, after zeroing the top 10% of the box's pixel count by the map,
after zeroing as many random pixels of the box; share of canvases where the top pixels hurt
more, and the share of the deleted pixels that had ink), the mean rank correlation with a fresh-weights copy (the randomization check) and,
outside the box, the median map value and the share of the mass in faint pixels (< 0.2).
"""

import argparse
import json

from mnist_loc import import_tensorflow_quietly

import_tensorflow_quietly()
import numpy as np  # noqa: E402

from mnist_loc import artifacts, explain  # noqa: E402
from mnist_loc.data import Digits, canvases_at  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--canvases", type=int, default=1000, help="the first N fixed test canvases")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("--picture", default=None, help="also draw both heads' maps for the first 8 canvases (PNG)")
    args = parser.parse_args()
    model = artifacts.load_model(args.model)
    task, _ = artifacts.read_task(args.model)
    task = task or "course"
    digits = Digits.find(task, args.data_dir)
    images, _, boxes = canvases_at("test", np.arange(args.canvases), task=task, digits=digits)
    print(f"{args.model}: task {getattr(task, 'name', task)}, {args.canvases:,} test canvases")
    results = {}
    for head in explain.HEADS:
        r = results[head] = explain.faithfulness(model, images, boxes, head)
        d, rnd = r["deletion"], r["randomization"]
        print(f"{head:>15}: mass inside the true box {r['mass_inside']:.3f} (box area {r['box_area']:.3f}); "
              f"deletion: score {d['score']:.3f} -> top {d['top']:.3f} vs random {d['random']:.3f} "
              f"(drop {d['drop_top']:.3f} vs {d['drop_random']:.3f}; top hurts more on {d['top_beats_random']:.1%}; "
              f"ink in the deleted pixels {d['ink_top']:.1%} vs {d['ink_random']:.1%}); "
              f"rank correlation with fresh weights {rnd['mean_rank_correlation']:.3f}")
    for head in explain.HEADS:  # where the mass outside the box comes from: a faint floor, or bright spots?
        outside = results[head]["outside"]
        print(f"{head:>15}: outside the true box the median map value is {outside['median']:.3f}; "
              f"{outside['faint_share']:.1%} of the mass there is in pixels below 0.2")
    if args.picture:
        from mnist_loc.evaluation import predict
        from mnist_loc.plots import plot_heatmaps

        first = images[:8]
        pred = predict(model, first)
        maps = {head: explain.heatmaps(model, first, head) for head in explain.HEADS}
        plot_heatmaps(first, maps, boxes[:8], pred["boxes"], pred_labels=pred["labels"], title=f"{args.model}: test canvases").savefig(args.picture, dpi=100)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
