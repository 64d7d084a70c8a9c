"""Seconds per training step with a float32 and a bfloat16 trunk, here.

    python benchmarks/precision_speed.py [--steps 10] [--batch-size 128]
    python benchmarks/precision_speed.py --task mnist-detection [--steps 10]

Both policies in one process, after one warm-up step each: what
``TrainConfig(mixed_precision=None)`` decides by ``mnist_loc.model.native_bfloat16()``,
measured. Without ``--task``, the course model on random canvases; with a detection task, the
task recipe's detector and compile step on one batch of the task's training canvases
(``TFDS_DATA_DIR`` must hold the digits), batch size from the recipe unless given. Prints wall
and CPU seconds per step.
"""

import argparse
import time

from mnist_loc import import_tensorflow_quietly

import_tensorflow_quietly()
import keras  # noqa: E402
import numpy as np  # noqa: E402

from mnist_loc.config import TrainConfig  # noqa: E402
from mnist_loc.model import build_model, compile_model, native_bfloat16  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None, help="default 128, or the detection task's recipe")
    parser.add_argument("--task", default=None, help="a detection task (e.g. mnist-detection): its recipe's detector")
    args = parser.parse_args()
    if args.task:
        batches = detection_steps(args.task, args.batch_size)
    else:
        args.batch_size = args.batch_size or 128
        rng = np.random.default_rng(0)
        x = rng.random((args.batch_size, 75, 75, 1), dtype=np.float32)
        y = {"classification": keras.utils.to_categorical(np.arange(args.batch_size) % 10, 10),
             "bounding_box": rng.random((args.batch_size, 4), dtype=np.float32)}
        batches = {p: (lambda p=p: compile_model(build_model(dtype_policy=p)), x, y) for p in (None, "mixed_bfloat16")}
    print(f"native bfloat16 here: {native_bfloat16()}")
    for name, policy in (("float32", None), ("bfloat16", "mixed_bfloat16")):
        make, x, y = batches[policy]
        args.batch_size = len(x)
        model = make()
        model.train_on_batch(x, y)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        print(f"{name:>8} trunk: {(time.perf_counter() - wall) / args.steps:.3f} s/step wall, "
              f"{(time.process_time() - cpu) / args.steps:.3f} s/step CPU (batch {args.batch_size}, {args.steps} steps)")


def detection_steps(task_name, batch_size):
    """``{policy: (build and compile, canvases, targets)}`` with the task recipe's detector."""
    from mnist_loc.data import Digits, make_dataset
    from mnist_loc.training import _detector_targets, check_model_outputs, compile_for, model_to_train

    config = TrainConfig.for_task(task_name, **({"batch_size": batch_size} if batch_size else {}))
    task = config.task
    digits = Digits.find(task, download=False)
    batch = next(iter(make_dataset("train", digits, task=task, batch_size=config.batch_size, seed=0)))
    print(f"{task.name}: recipe {config.recipe_label()}, detector {config.detector!r}, batch {config.batch_size}")

    def make(mixed):
        model = model_to_train(None, task.canvas_size, digits.num_classes, mixed, True, task.max_count, config.detector)
        outputs = check_model_outputs(model, task.canvas_size, digits.num_classes, True)
        return compile_for(model, config, 1000, outputs), outputs

    steps = {}
    for policy, mixed in ((None, False), ("mixed_bfloat16", True)):
        model, outputs = make(mixed)
        _, targets = _detector_targets(*batch, count=outputs["count"][-1] - 1)
        steps[policy] = (lambda model=model: model, batch[0].numpy(), {k: v.numpy() for k, v in targets.items()})
    return steps


if __name__ == "__main__":
    main()
