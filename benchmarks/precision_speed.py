"""Seconds per training step with a float32 and a bfloat16 trunk, here.

    python benchmarks/precision_speed.py [--steps 10] [--batch-size 128]
    python benchmarks/precision_speed.py --task mnist-detection [--steps 10]

Both policies in one process, after one warm-up step each: what
``TrainConfig(mixed_precision=None)`` decides by ``mnist_loc.model.native_bfloat16()``,
measured. Without ``--task``, the course model on random canvases. With ``--task``, that task's
recipe trained by ``mnist_loc.training.train`` itself for one short pass of real training canvases
(``TFDS_DATA_DIR`` must hold the digits; batch size from the recipe unless given), one step per
call, timed from the end of the first step to the end of the last. Prints wall and CPU seconds
per step.
"""

import argparse
import dataclasses
import time

from mnist_loc import import_tensorflow_quietly

import_tensorflow_quietly()
import keras  # noqa: E402
import numpy as np  # noqa: E402

from mnist_loc.config import TrainConfig  # noqa: E402
from mnist_loc.data import Digits  # noqa: E402
from mnist_loc.model import build_model, compile_model, native_bfloat16  # noqa: E402
from mnist_loc.training import train  # noqa: E402

POLICIES = (("float32", False), ("bfloat16", True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None, help="default 128, or the task's recipe")
    parser.add_argument("--task", default=None, help="a named task (e.g. mnist-detection): its recipe, trained by train()")
    args = parser.parse_args()
    print(f"native bfloat16 here: {native_bfloat16()}")
    times = recipe_step_times(args.task, args.batch_size, args.steps) if args.task else course_step_times(args.batch_size or 128, args.steps)
    for name, (wall, cpu, batch_size) in times.items():
        print(f"{name:>8} trunk: {wall:.3f} s/step wall, {cpu:.3f} s/step CPU (batch {batch_size}, {args.steps} steps)")


def course_step_times(batch_size, steps):
    """``{policy name: (wall s/step, CPU s/step, batch size)}`` of the course model on random canvases."""
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, 75, 75, 1), dtype=np.float32)
    y = {"classification": keras.utils.to_categorical(np.arange(batch_size) % 10, 10),
         "bounding_box": rng.random((batch_size, 4), dtype=np.float32)}
    times = {}
    for name, mixed in POLICIES:
        model = compile_model(build_model(dtype_policy="mixed_bfloat16" if mixed else None))
        model.train_on_batch(x, y)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            model.train_on_batch(x, y)
        times[name] = ((time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps, batch_size)
    return times


class StepTimer(keras.callbacks.Callback):
    """Wall and CPU clocks at the end of the first training step and of the last (one step per call)."""

    def on_train_batch_end(self, batch, logs=None):
        now = (time.perf_counter(), time.process_time())
        if batch == 0:
            self.first = now
        self.last = now


def recipe_step_times(task_name, batch_size, steps):
    """``{policy name: (wall s/step, CPU s/step, batch size)}`` of ``task_name``'s recipe, trained by ``train``."""
    config = TrainConfig.for_task(task_name, **({"batch_size": batch_size} if batch_size else {}))
    config = dataclasses.replace(config, epochs=1, steps_per_epoch=steps + 1, steps_per_execution=1,
                                 validation_canvases=config.validation_batch_size)
    digits = Digits.find(config.task, download=False)
    print(f"{config.task.name}: recipe {config.recipe_label()}, detector {config.detector!r}")
    times = {}
    for name, mixed in POLICIES:
        timer = StepTimer()
        train(dataclasses.replace(config, mixed_precision=mixed), digits, verbose=0, callbacks=[timer])
        times[name] = ((timer.last[0] - timer.first[0]) / steps, (timer.last[1] - timer.first[1]) / steps, config.batch_size)
    return times


if __name__ == "__main__":
    main()
