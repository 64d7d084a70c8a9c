"""Benchmark: the course lab's training vs mnist_loc's, side by side, on this machine.

    python benchmarks/bench_train.py [--chunks 12] [--chunk-examples 7680] [--data-dir DIR]
                                     [--ours '{"batch_size": 256}']

Each recipe trains in its own process (so peak RSS is its own), and the processes
take turns in lock-step: the lab trains one chunk of examples while the others wait,
then the next process trains one chunk, and so on (order ABC, CBA, ABC, ...). A
chunk lasts a few seconds, so all see the same machine: on a shared 2-core VM the
CPU's speed changes from one second to the next, and whole-run alternation left the
ratio at the mercy of which state each run drew. Every chunk is one Keras epoch of
one ``fit()``, so the input iterators (and the lab's shuffle buffer) live across
chunks as in a real run; the first chunk, which traces the step, is not timed.

Besides wall-clock images/s, each chunk's process CPU time (all threads, input
pipeline included) gives images per CPU-second: a cross-check that moves less when
the host throttles the VM, since a throttled process waits without using CPU.

The lab's recipe is re-implemented here as the baseline, as published: per-example
``tf.image.pad_to_bounding_box`` in a ``map`` (16 parallel calls), ``shuffle(5000)``,
batch 64, the course model compiled with ``compile_model()``'s defaults (Adam 1e-3,
CCE + MSE 1:1) in float32, and the whole validation set as one batch. mnist_loc runs
as ``train()`` does: seeded, with TensorFlow op determinism on. A third process, the
lab recipe with only op determinism added, shows how much of the gap that flag makes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from mnist_loc.config import TrainConfig  # TensorFlow-free

TRAINERS = ("lab", "lab_deterministic", "ours")
WARMUP_STEPS = 20  # for the one-shot pipeline workers


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _lab_dataset(data_dir, batch_size=64):
    import tensorflow as tf

    from mnist_loc.data import Digits

    def read_image_tfds(image, label):  # the lab's per-example placement
        xmin = tf.random.uniform((), 0, 48, dtype=tf.int32)
        ymin = tf.random.uniform((), 0, 48, dtype=tf.int32)
        image = tf.image.resize(tf.cast(image, tf.float32), (28, 28)) / 255.0
        image = tf.image.pad_to_bounding_box(tf.reshape(image, (28, 28, 1)), ymin, xmin, 75, 75)
        x, y = tf.cast(xmin, tf.float32), tf.cast(ymin, tf.float32)
        box = tf.stack([x / 75, y / 75, (x + 28) / 75, (y + 28) / 75])
        return image, {"classification": tf.one_hot(label, 10), "bounding_box": box}

    digits = Digits.find(data_dir=data_dir)
    train = tf.data.Dataset.from_tensor_slices(digits.split("train")).map(read_image_tfds, num_parallel_calls=16)
    train = train.shuffle(5000, reshuffle_each_iteration=True).repeat()
    train = train.batch(batch_size, drop_remainder=True).prefetch(-1)
    validation = tf.data.Dataset.from_tensor_slices(digits.split("validation")).map(read_image_tfds, num_parallel_calls=16)
    return train, validation.batch(10000)  # the lab validates on one big batch


def trainer(kind: str, chunks: int, chunk_examples: int, data_dir, overrides: dict) -> None:
    """Train ``kind``'s recipe for 1 + ``chunks`` chunks, each started by a line on stdin;
    print one JSON line per timed chunk, then one with the peak RSS."""
    import keras
    import tensorflow as tf

    from mnist_loc.data import Digits, make_dataset
    from mnist_loc.model import build_model, compile_model, trunk_policy
    from mnist_loc.training import prepare

    if kind.startswith("lab"):
        batch_size = 64
        if kind == "lab_deterministic":
            tf.random.set_seed(0)  # determinism requires seeded random ops
            tf.config.experimental.enable_op_determinism()
        model = compile_model(build_model())
        train, validation = _lab_dataset(data_dir, batch_size)
    else:
        config = TrainConfig(**overrides)
        batch_size = config.batch_size
        keras.utils.set_random_seed(config.seed)  # exactly as train() runs: seeded, with op determinism
        tf.config.experimental.enable_op_determinism()
        model = build_model(dtype_policy=trunk_policy(config.mixed_precision))
        prepare(model, config, 10, chunk_examples // batch_size)
        digits = Digits.find(data_dir=data_dir)
        train = make_dataset("train", digits, batch_size=batch_size)
        validation = make_dataset("validation", digits, batch_size=config.validation_batch_size)
    if chunk_examples % batch_size:
        raise SystemExit(f"--chunk-examples {chunk_examples} is not a multiple of {kind}'s batch size {batch_size}")
    steps = chunk_examples // batch_size

    class LockStep(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            sys.stdin.readline()  # wait for our turn
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            seconds, cpu_seconds = time.perf_counter() - self.start, time.process_time() - self.cpu_start
            print(json.dumps({"chunk": epoch, "seconds": seconds, "cpu_seconds": cpu_seconds, "images": steps * batch_size}), flush=True)

    model.fit(train, steps_per_epoch=steps, epochs=1 + chunks, verbose=0, callbacks=[LockStep()])
    # Validation, run once for its memory, waits for a turn too: run as soon as the last chunk
    # ended, it would compete for the cores with the other recipes' last timed chunk.
    sys.stdin.readline()
    model.evaluate(validation, verbose=0)
    print(json.dumps({"peak_rss_mb": _peak_rss_mb()}), flush=True)


def one_shot(kind: str, examples: int, data_dir) -> dict:
    from mnist_loc.data import Digits, make_dataset
    from mnist_loc.evaluation import evaluate
    from mnist_loc.model import build_model

    if kind in ("pipeline", "pipeline_harder", "lab_pipeline"):
        batch_size = 64 if kind == "lab_pipeline" else 128
        # The harder task of the testbed: digits resized 0.5-2x, ink boxes, 4 distractor fragments.
        task = "sized-cluttered" if kind == "pipeline_harder" else "course"
        if kind == "lab_pipeline":
            train = _lab_dataset(data_dir, batch_size)[0]
        else:
            train = make_dataset("train", Digits.find(task, data_dir), task=task, batch_size=batch_size)
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
        model = build_model()
        test = make_dataset("test", Digits.find(data_dir=data_dir), batch_size=500)
        evaluate(model, test.take(1))  # warm-up: trace the predict function
        start = time.perf_counter()
        report = evaluate(model, test)
        return {"seconds": time.perf_counter() - start, "num_examples": report["num_examples"], "peak_rss_mb": _peak_rss_mb()}
    raise ValueError(kind)


def _command(args, kind: str) -> list:
    cmd = [sys.executable, __file__, "--worker", kind, "--chunks", str(args.chunks),
           "--chunk-examples", str(args.chunk_examples), "--ours", args.ours]
    return cmd + (["--data-dir", args.data_dir] if args.data_dir else [])


def _env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _read_json(proc, kind: str, log) -> dict:
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        log.seek(0)
        sys.exit(f"worker {kind} failed (exit {proc.returncode}):\n{log.read()[-3000:]}")
    return json.loads(line)


def _take_turn(proc, kind: str, log) -> dict:
    """Let one waiting worker run its next piece of work; return the JSON line it prints."""
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return _read_json(proc, kind, log)


def run_lock_step(args) -> dict:
    """Start the trainers, then give them turns chunk by chunk; return each one's chunks and RSS."""
    procs, logs = {}, {}
    with contextlib.ExitStack() as stack:
        for kind in TRAINERS:
            logs[kind] = stack.enter_context(tempfile.TemporaryFile("w+"))
            procs[kind] = stack.enter_context(subprocess.Popen(
                _command(args, kind), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=logs[kind], text=True, env=_env()))
            stack.callback(procs[kind].kill)  # runs first on the way out: no trainer outlives a failure
        results = {kind: {"chunks": []} for kind in TRAINERS}
        for chunk in range(1 + args.chunks):
            order = TRAINERS if chunk % 2 == 0 else TRAINERS[::-1]  # ABC CBA: linear drift cancels
            for kind in order:
                result = _take_turn(procs[kind], kind, logs[kind])
                if chunk > 0:  # chunk 0 traces the train step
                    results[kind]["chunks"].append(result)
            if chunk > 0:
                _print_chunk(chunk, {k: results[k]["chunks"][-1] for k in TRAINERS})
        for kind in TRAINERS:  # one at a time, as above: validate for peak RSS, then exit
            results[kind].update(_take_turn(procs[kind], kind, logs[kind]))
            procs[kind].wait()
    return results


def _print_chunk(number: int, chunks: dict) -> None:
    rates = {k: c["images"] / c["seconds"] for k, c in chunks.items()}
    per_cpu = {k: c["images"] / c["cpu_seconds"] for k, c in chunks.items()}
    print(f"  chunk {number}: " + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items())
          + f" images/s, ours/lab {rates['ours'] / rates['lab']:.2f}x; per CPU-second: "
          + ", ".join(f"{k} {v:,.0f}" for k, v in per_cpu.items())
          + f", ours/lab {per_cpu['ours'] / per_cpu['lab']:.2f}x", flush=True)


def run_one_shot(args, kind: str, examples: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--examples", str(examples)]
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
    if out.returncode != 0:
        sys.exit(f"worker {kind} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {kind:<13} {json.dumps({k: round(v, 1) for k, v in result.items()})}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=12, help="timed chunks per recipe (default 12)")
    parser.add_argument("--chunk-examples", type=int, default=7680,
                        help="training examples per chunk, a multiple of both batch sizes (default 7,680)")
    parser.add_argument("--ours", default="{}", help="TrainConfig overrides for mnist_loc, as JSON (default: none)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=int, default=60000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:  # a bad override fails here, before any worker starts
        overrides = json.loads(args.ours)
        TrainConfig(**overrides)
    except (TypeError, ValueError) as error:  # JSONDecodeError is a ValueError
        parser.error(f"--ours: {error}")
    if args.worker in TRAINERS:
        trainer(args.worker, args.chunks, args.chunk_examples, args.data_dir, overrides)
        return
    if args.worker:
        print(json.dumps(one_shot(args.worker, args.examples, args.data_dir)))
        return

    examples = args.chunks * args.chunk_examples
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"TensorFlow {importlib.metadata.version('tensorflow')}, {time.strftime('%Y-%m-%d')}; {args.chunks} chunks of "
          f"{args.chunk_examples:,} training examples per recipe, in lock-step; mnist_loc overrides {overrides}")
    trained = run_lock_step(args)
    pipeline = run_one_shot(args, "pipeline", examples)
    lab_pipeline = run_one_shot(args, "lab_pipeline", examples)
    harder_pipeline = run_one_shot(args, "pipeline_harder", examples)
    evaluation = run_one_shot(args, "evaluate", examples)

    def rate(kind, clock="seconds"):
        chunks = trained[kind]["chunks"]
        return sum(c["images"] for c in chunks) / sum(c[clock] for c in chunks)

    pair_ratios = [
        (o["images"] / o["seconds"]) / (la["images"] / la["seconds"])
        for o, la in zip(trained["ours"]["chunks"], trained["lab"]["chunks"])
    ]
    lab, ours = rate("lab"), rate("ours")
    rows = [
        ("training, course lab recipe (images/s)", f"{lab:,.0f}", ""),
        ("training, mnist_loc default (images/s)", f"{ours:,.0f}", ""),
        ("training speed-up (ours / lab, all chunks)", f"{ours / lab:.2f}x", ">= 2.0x"),
        ("speed-up, median of chunk pairs", f"{statistics.median(pair_ratios):.2f}x", ""),
        ("speed-up, lowest / highest chunk pair", f"{min(pair_ratios):.2f}-{max(pair_ratios):.2f}x", ""),
        ("training, lab / mnist_loc (images per CPU-s)", f"{rate('lab', 'cpu_seconds'):,.0f} / {rate('ours', 'cpu_seconds'):,.0f}", ""),
        ("speed-up in CPU time (ours / lab)", f"{rate('ours', 'cpu_seconds') / rate('lab', 'cpu_seconds'):.2f}x", ""),
        ("lab recipe + op determinism only (images/s)", f"{rate('lab_deterministic'):,.0f}", ""),
        ("input pipeline, mnist_loc (canvases/s)", f"{pipeline['canvases_per_s']:,.0f}", ">= 20,000"),
        ("input pipeline, course lab (canvases/s)", f"{lab_pipeline['canvases_per_s']:,.0f}", ""),
        ("pipeline, scale 0.5-2 + ink + 4 fragments", f"{harder_pipeline['canvases_per_s']:,.0f}", ">= 50,000"),
        ("evaluate 10,000 test canvases (s)", f"{evaluation['seconds']:.2f}", "<= 5"),
        ("peak RSS, lab training process (MB)", f"{trained['lab']['peak_rss_mb']:,.0f}", ""),
        ("peak RSS, mnist_loc training process (MB)", f"{trained['ours']['peak_rss_mb']:,.0f}", ""),
    ]
    print()
    print(f"| {'measure':<44} | {'value':>13} | {'target':>9} |")
    print(f"|{'-' * 46}|{'-' * 15}|{'-' * 11}|")
    for name, value, target in rows:
        print(f"| {name:<44} | {value:>13} | {target:>9} |")


if __name__ == "__main__":
    main()
