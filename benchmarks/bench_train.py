"""Benchmark: the course lab's training vs mnist_loc's, side by side, on this machine.

    python benchmarks/bench_train.py [--examples 60000] [--rounds 2] [--data-dir DIR]

Each measurement runs in its own process (so peak RSS is its own), and the lab and
mnist_loc runs alternate (lab, ours, lab, ours, ...) so that machine drift cancels.
Both train on the same number of examples after a short warm-up that is not timed.

The lab's recipe is re-implemented here as the baseline, as published: per-example
``tf.image.pad_to_bounding_box`` in a ``map`` (16 parallel calls), ``shuffle(5000)``,
batch 64, the seed model compiled with ``compile_model()``'s defaults (Adam 1e-3,
CCE + MSE 1:1) in float32, and the whole validation set as one batch. mnist_loc runs
as ``train()`` does: seeded, with TensorFlow op determinism on. One extra run of the
lab recipe with only op determinism added shows how much of the gap that flag makes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

WARMUP_STEPS = 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _lab_dataset(data_dir, batch_size=64):
    import tensorflow as tf

    from mnist_loc.data import load_digits

    def read_image_tfds(image, label):  # the lab's per-example placement
        xmin = tf.random.uniform((), 0, 48, dtype=tf.int32)
        ymin = tf.random.uniform((), 0, 48, dtype=tf.int32)
        image = tf.image.resize(tf.cast(image, tf.float32), (28, 28)) / 255.0
        image = tf.image.pad_to_bounding_box(tf.reshape(image, (28, 28, 1)), ymin, xmin, 75, 75)
        x, y = tf.cast(xmin, tf.float32), tf.cast(ymin, tf.float32)
        box = tf.stack([x / 75, y / 75, (x + 28) / 75, (y + 28) / 75])
        return image, {"classification": tf.one_hot(label, 10), "bounding_box": box}

    train = load_digits("train", data_dir).map(read_image_tfds, num_parallel_calls=16)
    train = train.shuffle(5000, reshuffle_each_iteration=True).repeat()
    train = train.batch(batch_size, drop_remainder=True).prefetch(-1)
    validation = load_digits("validation", data_dir).map(read_image_tfds, num_parallel_calls=16)
    return train, validation.batch(10000)  # the lab validates on one big batch


def worker(kind: str, examples: int, data_dir) -> dict:
    import tensorflow as tf

    from mnist_loc.data import make_dataset
    from mnist_loc.evaluation import evaluate
    from mnist_loc.model import build_model, compile_model
    from mnist_loc.config import TrainConfig
    from mnist_loc.training import make_model, seed_everything

    if kind in ("lab", "lab_deterministic", "ours"):
        if kind.startswith("lab"):
            batch_size = 64
            if kind == "lab_deterministic":  # the lab's recipe with only op determinism added, for attribution
                tf.random.set_seed(0)  # determinism requires seeded random ops
                tf.config.experimental.enable_op_determinism()
            model = compile_model(build_model())
            train, validation = _lab_dataset(data_dir, batch_size)
        else:
            config = TrainConfig()
            batch_size = config.batch_size
            seed_everything(config)  # exactly as train() runs: seeded, with op determinism
            model = make_model(config, steps_per_epoch=examples // batch_size)
            train = make_dataset("train", batch_size=batch_size, data_dir=data_dir)
            validation = make_dataset("validation", batch_size=config.validation_batch_size, data_dir=data_dir)
        model.fit(train, steps_per_epoch=WARMUP_STEPS, epochs=1, verbose=0)  # traces the step; not timed
        steps = examples // batch_size
        start = time.perf_counter()
        model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        model.evaluate(validation, verbose=0)  # what each recipe does once per epoch, for RSS
        return {"images_per_s": steps * batch_size / seconds, "seconds": seconds, "peak_rss_mb": _peak_rss_mb()}
    if kind in ("pipeline", "lab_pipeline"):
        batch_size = 128 if kind == "pipeline" else 64
        train = make_dataset("train", batch_size=batch_size, data_dir=data_dir) if kind == "pipeline" else _lab_dataset(data_dir, batch_size)[0]
        iterator = iter(train)
        for _ in range(WARMUP_STEPS):
            next(iterator)
        steps = examples // batch_size
        start = time.perf_counter()
        for _ in range(steps):
            next(iterator)
        seconds = time.perf_counter() - start
        return {"canvases_per_s": steps * batch_size / seconds, "peak_rss_mb": _peak_rss_mb()}
    if kind == "evaluate":
        config = TrainConfig()
        seed_everything(config)
        model = make_model(config, steps_per_epoch=1)
        test = make_dataset("test", batch_size=500, data_dir=data_dir)
        evaluate(model, test.take(1))  # warm-up: trace the predict function
        start = time.perf_counter()
        report = evaluate(model, test)
        return {"seconds": time.perf_counter() - start, "num_examples": report["num_examples"], "peak_rss_mb": _peak_rss_mb()}
    raise ValueError(kind)


def run_worker(kind: str, examples: int, data_dir) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--examples", str(examples)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        sys.exit(f"worker {kind} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {kind:<13} {json.dumps({k: round(v, 1) for k, v in result.items()})}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=60000, help="training examples per timed run (default 60,000)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating lab/ours rounds (default 2)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.examples, args.data_dir)))
        return

    import tensorflow as tf

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, {time.strftime('%Y-%m-%d')}; {args.examples:,} training examples per run, {args.rounds} rounds")
    runs = {"lab": [], "ours": []}
    for _ in range(args.rounds):
        for kind in ("lab", "ours"):
            runs[kind].append(run_worker(kind, args.examples, args.data_dir))
    lab_deterministic = run_worker("lab_deterministic", args.examples, args.data_dir)
    pipeline = run_worker("pipeline", args.examples, args.data_dir)
    lab_pipeline = run_worker("lab_pipeline", args.examples, args.data_dir)
    evaluation = run_worker("evaluate", args.examples, args.data_dir)

    lab = statistics.median(r["images_per_s"] for r in runs["lab"])
    ours = statistics.median(r["images_per_s"] for r in runs["ours"])
    rows = [
        ("training, course lab recipe (images/s)", f"{lab:,.0f}", ""),
        ("training, mnist_loc default (images/s)", f"{ours:,.0f}", ""),
        ("training speed-up (ours / lab)", f"{ours / lab:.2f}x", ">= 2.0x"),
        ("lab recipe + op determinism only (images/s)", f"{lab_deterministic['images_per_s']:,.0f}", ""),
        ("input pipeline, mnist_loc (canvases/s)", f"{pipeline['canvases_per_s']:,.0f}", ">= 20,000"),
        ("input pipeline, course lab (canvases/s)", f"{lab_pipeline['canvases_per_s']:,.0f}", ""),
        ("evaluate 10,000 test canvases (s)", f"{evaluation['seconds']:.2f}", "<= 5"),
        ("peak RSS, lab training process (MB)", f"{max(r['peak_rss_mb'] for r in runs['lab']):,.0f}", ""),
        ("peak RSS, mnist_loc training process (MB)", f"{max(r['peak_rss_mb'] for r in runs['ours']):,.0f}", ""),
    ]
    print()
    print(f"| {'measure':<44} | {'value':>10} | {'target':>9} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 11}|")
    for name, value, target in rows:
        print(f"| {name:<44} | {value:>10} | {target:>9} |")


if __name__ == "__main__":
    main()
