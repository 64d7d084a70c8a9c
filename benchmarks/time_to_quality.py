"""Benchmark: how long each recipe takes to reach a quality, side by side on this machine.

    python benchmarks/time_to_quality.py [--recipes lab default fast] [--extra NAME='{"epochs": 14}']
                                         [--chunk-examples 7680] [--seed 0] [--png time_to_quality.png]

Each recipe trains with ``train()`` in its own process; the processes take turns in
lock-step as in ``bench_train.py``: one trains about ``--chunk-examples`` examples while
the others wait (order ABC, CBA, ...), so all see the same machine. After every chunk
the clock stops and the process scores the fixed validation canvases (seed 0; the
weight average when the recipe keeps one); scoring is not timed. A recipe's seconds are
the sum of its turns: wall-clock and process CPU time (all threads), from the first step
(tracing included) to the last, Keras' per-epoch validation included as in ``train()``.

Thresholds (validation canvases):
  L  the lab's final quality: accuracy >= 0.982 and IoU >= 0.6 for >= 92.3% of digits
  M  accuracy >= 0.990 and mean IoU >= 0.94
  H  accuracy >= 0.993 and mean IoU >= 0.95

Prints each checkpoint as it happens, then per recipe and threshold the wall and CPU
seconds at which it was first reached and the ratio to the lab's, the final quality,
train seconds and peak RSS; writes a PNG of accuracy and mean IoU against seconds.
Quality numbers are deterministic; seconds are not, hence the alternation and CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

from mnist_loc.config import TrainConfig, preset  # TensorFlow-free

THRESHOLDS = {
    "L": {"accuracy": 0.982, "iou_at_60": 0.923},
    "M": {"accuracy": 0.990, "mean_iou": 0.94},
    "H": {"accuracy": 0.993, "mean_iou": 0.95},
}


def reached(quality: dict, threshold: str) -> bool:
    return all(quality[name] >= bound for name, bound in THRESHOLDS[threshold].items())


def worker(config: TrainConfig, chunk_examples: int, data_dir) -> None:
    """Train ``config``, pausing after every chunk for a line on stdin; print one JSON line per turn."""
    import keras

    from mnist_loc.data import Digits, make_dataset
    from mnist_loc.evaluation import evaluate
    from mnist_loc.experiment import run

    digits = Digits.find(config.task, data_dir)
    validation = make_dataset("validation", digits, task=config.task, batch_size=500, seed=0)

    def score(model) -> dict:
        weights = model.trainable_variables
        averaged = getattr(model.optimizer, "use_ema", False)
        if averaged:  # score the average, as train()'s validation does; then put the raw weights back
            raw = [w.numpy() for w in weights]
            for w, a in zip(weights, model.optimizer._model_variables_moving_average):
                w.assign(a)
        r = evaluate(model, validation)
        if averaged:
            for w, value in zip(weights, raw):
                w.assign(value)
        return {k: r[k] for k in ("accuracy", "mean_iou", "iou_at_60")}

    class Turns(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = self.cpu_seconds = 0.0
            self.examples_at_last_score = 0

        def resume(self):
            sys.stdin.readline()  # wait for our turn
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def pause(self):
            self.seconds += time.perf_counter() - self.start
            self.cpu_seconds += time.process_time() - self.cpu_start

        def examples(self):
            return int(self.model.optimizer.iterations.numpy()) * config.batch_size

        def report(self, model, quality=None, **extra):
            iterations = int(model.optimizer.iterations.numpy())
            print(json.dumps({"examples": iterations * config.batch_size, "seconds": self.seconds, "cpu_seconds": self.cpu_seconds,
                              **(quality or score(model)), **extra}), flush=True)

        def on_train_begin(self, logs=None):
            self.resume()

        def on_train_batch_end(self, batch, logs=None):
            if self.examples() - self.examples_at_last_score >= chunk_examples:
                self.pause()
                self.examples_at_last_score = self.examples()
                self.report(self.model)
                self.resume()

        def on_train_end(self, logs=None):
            self.pause()  # fit() has already copied the weight average into the model

    turns = Turns()
    done = run(config, split="validation", digits=digits, callbacks=[turns])  # the final model scored once, by run()
    final = {k: done.report[k] for k in ("accuracy", "mean_iou", "iou_at_60")}
    turns.report(done.model, final, done=True, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_lock_step(configs: dict, args) -> dict:
    """Start one worker per recipe and give them turns until all are done; return their lines."""
    procs, logs, curves = {}, {}, {name: [] for name in configs}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with contextlib.ExitStack() as stack:
        for name, config in configs.items():
            cmd = [sys.executable, __file__, "--worker", json.dumps(config.to_dict()), "--chunk-examples", str(args.chunk_examples)]
            cmd += ["--data-dir", args.data_dir] if args.data_dir else []
            logs[name] = stack.enter_context(tempfile.TemporaryFile("w+"))
            procs[name] = stack.enter_context(subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs[name], text=True, env=env))
            stack.callback(procs[name].kill)  # runs first on the way out: no worker outlives a failure
        running, turn = list(configs), 0
        while running:
            for name in running if turn % 2 == 0 else running[::-1]:  # ABC CBA: linear drift cancels
                procs[name].stdin.write("go\n")
                procs[name].stdin.flush()
                line = procs[name].stdout.readline()
                if not line:
                    procs[name].wait()
                    logs[name].seek(0)
                    sys.exit(f"worker {name} failed (exit {procs[name].returncode}):\n{logs[name].read()[-3000:]}")
                point = json.loads(line)
                curves[name].append(point)
                print(f"  {name:<12} {point['examples']:>9,} examples {point['seconds']:7.1f} s (CPU {point['cpu_seconds']:7.1f} s)  "
                      f"acc {point['accuracy']:.4f}  mean IoU {point['mean_iou']:.4f}  IoU>=0.6 {point['iou_at_60']:.4f}", flush=True)
            running = [name for name in running if not curves[name][-1].get("done")]
            turn += 1
    return curves


def first_reached(curve: list, threshold: str):
    return next((p for p in curve if reached(p, threshold)), None)


def summary_table(curves: dict, baseline: str = "lab") -> str:
    lines = [
        "| recipe | threshold | wall s | CPU s | wall / lab | CPU / lab |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, curve in curves.items():
        for threshold in THRESHOLDS:
            point, lab = first_reached(curve, threshold), first_reached(curves.get(baseline, []), threshold)
            if point is None:
                lines.append(f"| {name} | {threshold} | not reached | | | |")
                continue
            ratios = ("", "") if lab is None or name == baseline else (
                f"{point['seconds'] / lab['seconds']:.3f}", f"{point['cpu_seconds'] / lab['cpu_seconds']:.3f}")
            lines.append(f"| {name} | {threshold} | {point['seconds']:.1f} | {point['cpu_seconds']:.1f} | {ratios[0]} | {ratios[1]} |")
    lines += ["", "| recipe | final accuracy | final mean IoU | IoU >= 0.6 | train s (wall) | CPU s | peak RSS MB |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, curve in curves.items():
        last = curve[-1]
        lines.append(f"| {name} | {last['accuracy']:.4f} | {last['mean_iou']:.4f} | {last['iou_at_60']:.4f} | "
                     f"{last['seconds']:.1f} | {last['cpu_seconds']:.1f} | {last['peak_rss_mb']:,.0f} |")
    return "\n".join(lines)


def plot(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, metric, label in ((axes[0], "accuracy", "validation accuracy"), (axes[1], "mean_iou", "validation mean IoU")):
        for name, curve in curves.items():
            ax.plot([p["seconds"] for p in curve], [p[metric] for p in curve], marker=".", label=name)
        for threshold, bounds in THRESHOLDS.items():
            if metric in bounds:
                ax.axhline(bounds[metric], color="grey", lw=0.8, ls="--")
                ax.annotate(threshold, (1.0, bounds[metric]), xycoords=("axes fraction", "data"), ha="left", va="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_ylim({"accuracy": (0.95, 1.0), "mean_iou": (0.8, 1.0)}[metric])
        ax.set_xlabel("training seconds (wall, sum of turns; log scale)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def recipe(spec: str, seed: int) -> tuple:
    """``"fast"`` (a preset) or ``"NAME={json overrides of TrainConfig}"``."""
    name, _, overrides = spec.partition("=")
    if not overrides:
        return name, preset(name, seed=seed)
    return name, TrainConfig(**{"seed": seed, **json.loads(overrides)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["lab", "default", "fast"], help="presets or NAME=JSON (default: lab default fast)")
    parser.add_argument("--extra", nargs="*", default=[], help="more recipes, NAME=JSON of TrainConfig overrides")
    parser.add_argument("--chunk-examples", type=int, default=7680, help="training examples between scores (default 7,680)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", default="time_to_quality.png")
    parser.add_argument("--json", default=None, help="also write every checkpoint here")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(TrainConfig(**json.loads(args.worker)), args.chunk_examples, args.data_dir)
        return
    try:
        configs = dict(recipe(spec, args.seed) for spec in args.recipes + args.extra)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"TensorFlow {importlib.metadata.version('tensorflow')}, {time.strftime('%Y-%m-%d')}; seed {args.seed}; "
          f"scored every ~{args.chunk_examples:,} training examples, in lock-step")
    for name, config in configs.items():
        print(f"  {name}: {json.dumps({k: v for k, v in config.to_dict().items() if v != TrainConfig().to_dict()[k]})} (vs TrainConfig())")
    curves = run_lock_step(configs, args)
    print()
    print(summary_table(curves))
    plot(curves, args.png)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"configs": {n: c.to_dict() for n, c in configs.items()}, "curves": curves}, f, indent=1)


if __name__ == "__main__":
    main()
