"""Peak memory (RSS) of each phase of a run, for each task's default recipe.

    python benchmarks/memory.py [--tasks course multi-mnist mnist-detection] [--steps 40] [--epochs 2]

Each task runs in a fresh process, as ``run()`` does its work: the digits read, the recipe
trained (``--epochs`` short passes of ``--steps`` steps, so the validation canvases are scored
more than once), the count threshold chosen on the validation canvases (calibration), then the
test canvases scored. Before each phase the process's peak RSS is reset to its current RSS
(Linux's ``/proc/self/clear_refs``), so each phase's peak includes what the run holds from the
phases before it (the digits, the model), as in a real run. ``TFDS_DATA_DIR`` must hold MNIST.
Prints one line per task and phase: peak RSS in MB (10^6 bytes), the phase's wall seconds and
the process's CPU seconds (all threads) over it.
"""

import argparse
import dataclasses
import json
import subprocess
import sys
import time


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak RSS, to the current RSS


def phases(task_name: str, steps: int, epochs: int) -> list:
    """One process: the phases of a run of ``task_name``'s default recipe, cut to ``epochs``
    passes of ``steps`` steps; ``[(phase, peak MB, wall seconds, CPU seconds)]``."""
    from mnist_loc import import_tensorflow_quietly

    import_tensorflow_quietly()
    from mnist_loc.config import TrainConfig
    from mnist_loc.data import Digits
    from mnist_loc.evaluation import TEST_SEED, kind_of
    from mnist_loc.training import train

    config = dataclasses.replace(TrainConfig.for_task(task_name), epochs=epochs, steps_per_epoch=steps)
    rows = []

    def phase(name, work):
        _reset_peak()
        start, cpu = time.perf_counter(), time.process_time()
        value = work()
        rows.append((name, _rss_kib("VmHWM") * 1024 / 1e6, time.perf_counter() - start, time.process_time() - cpu))
        return value

    digits = phase("digits", lambda: Digits.find(config.task, download=False))
    model = phase("training", lambda: train(config, digits, verbose=0).model)
    kind = kind_of(config.task, model)
    options = phase("calibration", lambda: kind.calibrate(model, digits, config.task))
    phase("test scoring", lambda: kind.evaluate(model, digits, task=config.task, split="test", seed=TEST_SEED,
                                                keep_images=False, **options))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["course", "multi-mnist", "mnist-detection"])
    parser.add_argument("--steps", type=int, default=40, help="training steps a pass (default 40)")
    parser.add_argument("--epochs", type=int, default=2, help="passes (default 2: the validation canvases are scored twice)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(phases(args.worker, args.steps, args.epochs)))
        return
    print(f"{'task':<16}{'phase':<14}{'peak RSS MB':>12}{'seconds':>9}{'CPU s':>8}")
    for task in args.tasks:
        worker = subprocess.run([sys.executable, __file__, "--worker", task, "--steps", str(args.steps), "--epochs", str(args.epochs)],
                                capture_output=True, text=True)
        if worker.returncode:
            sys.exit(f"{task}: the worker failed:\n{worker.stderr[-3000:]}")
        for name, peak, seconds, cpu in json.loads(worker.stdout.strip().splitlines()[-1]):
            print(f"{task:<16}{name:<14}{peak:>12,.0f}{seconds:>9.1f}{cpu:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
