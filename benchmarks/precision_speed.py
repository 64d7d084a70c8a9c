"""Seconds per training step of the course model with a float32 and a bfloat16 trunk, here.

    python benchmarks/precision_speed.py [--steps 10] [--batch-size 128]

Both policies in one process, after one warm-up step each, on random canvases: what
``TrainConfig(mixed_precision=None)`` decides by ``mnist_loc.model.native_bfloat16()``,
measured. Prints wall and CPU seconds per step.
"""

import argparse
import time

from mnist_loc import import_tensorflow_quietly

import_tensorflow_quietly()
import keras  # noqa: E402
import numpy as np  # noqa: E402

from mnist_loc.model import build_model, compile_model, native_bfloat16  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, 75, 75, 1), dtype=np.float32)
    y = {"classification": keras.utils.to_categorical(np.arange(args.batch_size) % 10, 10),
         "bounding_box": rng.random((args.batch_size, 4), dtype=np.float32)}
    print(f"native bfloat16 here: {native_bfloat16()}")
    for name, policy in (("float32", None), ("bfloat16", "mixed_bfloat16")):
        model = compile_model(build_model(dtype_policy=policy))
        model.train_on_batch(x, y)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        print(f"{name:>8} trunk: {(time.perf_counter() - wall) / args.steps:.3f} s/step wall, "
              f"{(time.process_time() - cpu) / args.steps:.3f} s/step CPU (batch {args.batch_size}, {args.steps} steps)")


if __name__ == "__main__":
    main()
