"""Canvases per second of Grad-CAM heatmaps (``mnist_loc.explain.heatmaps``) for each head, here.

    python benchmarks/explain_speed.py [--model runs/default/model.keras] [--canvases 2000] [--batch-size 250]

The course model (fresh weights unless ``--model``; the speed does not depend on them) on
random canvases, after one warm-up batch per head, both heads in one process; predict's
speed beside them for scale. Prints wall and CPU seconds and canvases/s.
"""

import argparse
import time

from mnist_loc import import_tensorflow_quietly

import_tensorflow_quietly()
import numpy as np  # noqa: E402

from mnist_loc import artifacts, explain  # noqa: E402
from mnist_loc.evaluation import predict  # noqa: E402
from mnist_loc.model import build_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a .keras file (default: the course model, fresh weights)")
    parser.add_argument("--canvases", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args()
    model = artifacts.load_model(args.model) if args.model else build_model()
    x = np.random.default_rng(0).random((args.canvases, 75, 75, 1), dtype=np.float32)
    jobs = {head: (lambda head=head: explain.heatmaps(model, x, head, batch_size=args.batch_size)) for head in explain.HEADS}
    jobs["predict (for scale)"] = lambda: predict(model, x, batch_size=args.batch_size)
    for name, job in jobs.items():
        if name in explain.HEADS:
            explain.heatmaps(model, x[: args.batch_size], name, batch_size=args.batch_size)
        else:
            predict(model, x[: args.batch_size], batch_size=args.batch_size)
        wall, cpu = time.perf_counter(), time.process_time()
        job()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{name:>20}: {args.canvases / wall:7.0f} canvases/s ({wall:.2f} s wall, {cpu:.2f} s CPU for {args.canvases:,}, batch {args.batch_size})")


if __name__ == "__main__":
    main()
