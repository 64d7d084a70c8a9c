"""Where a training step of the course model spends its time on this CPU (a diagnostic).

    python benchmarks/step_profile.py [--rounds 10] [--batch-size 128]

1. The bfloat16 ops on the first layer's activations ``[B, 73, 73, 16]`` that run on
   their own in a training step, timed one by one: ReLU's gradient, average pooling and
   its gradient. (TensorFlow's profiler shows grappler fusing each convolution with its
   bias add and ReLU into one oneDNN op, and the bias gradient into the filter gradient,
   so those have no cost of their own.)
2. The training step (``fit``, Adam, CCE + MSE, mixed_bfloat16 trunk) of the course model
   against the same network without the ReLUs of its three convolutions. The second is *not* a model we would
   train; it only locates the cost. The two alternate in one process, so they see the
   same machine; each round reports wall and CPU milliseconds per step.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _time_ms(fn, *args, repeats=40) -> float:
    """Best of 3 means over ``repeats`` calls, in ms."""
    import tensorflow as tf

    fn(*args)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn(*args)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        best = min(best, (time.perf_counter() - start) / repeats * 1000)
    return best


def elementwise_ops(batch_size: int) -> dict:
    import tensorflow as tf

    bf16 = tf.bfloat16
    shape = (batch_size, 73, 73, 16)
    z = tf.cast(tf.random.stateless_normal(shape, seed=(0, 1)), bf16)
    y = tf.nn.relu(z)
    pooled_grad = tf.cast(tf.random.stateless_normal((batch_size, 36, 36, 16), seed=(0, 2)), bf16)
    ops = {
        "ReLU gradient": (lambda y: tf.raw_ops.ReluGrad(gradients=y, features=y), y),
        "average pooling": (lambda y: tf.nn.avg_pool2d(y, 2, 2, "VALID"), y),
        "average-pool gradient": (lambda g: tf.raw_ops.AvgPoolGrad(
            orig_input_shape=shape, grad=g, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="VALID"), pooled_grad),
    }
    return {name: _time_ms(tf.function(fn), arg) for name, (fn, arg) in ops.items()}


def step_ablation(batch_size: int, rounds: int, steps: int = 25) -> dict:
    import keras
    import tensorflow as tf
    from keras import layers

    from mnist_loc.model import build_model

    keras.utils.set_random_seed(0)

    def without_conv_relus():
        inputs = keras.Input((75, 75, 1))
        x = inputs
        for filters in (16, 32, 64):
            x = layers.Conv2D(filters, 3, dtype="mixed_bfloat16")(x)
            x = layers.AveragePooling2D(2, dtype="mixed_bfloat16")(x)
        x = layers.Dense(128, activation="relu")(layers.Flatten(dtype="mixed_bfloat16")(x))
        return keras.Model(inputs, {"classification": layers.Dense(10, activation="softmax", name="classification")(x),
                                    "bounding_box": layers.Dense(4, name="bounding_box")(x)})

    models = {"course model": build_model(dtype_policy="mixed_bfloat16"), "no conv ReLUs": without_conv_relus()}
    images = tf.random.stateless_uniform((batch_size, 75, 75, 1), seed=(0, 3))
    targets = {"classification": tf.one_hot(tf.range(batch_size) % 10, 10), "bounding_box": tf.fill((batch_size, 4), 0.5)}
    data = tf.data.Dataset.from_tensors((images, targets)).repeat()
    for model in models.values():
        model.compile(optimizer="adam", loss={"classification": "categorical_crossentropy", "bounding_box": "mse"})
        model.fit(data, steps_per_epoch=5, epochs=1, verbose=0)  # trace
    wall = {name: [] for name in models}
    cpu = {name: [] for name in models}
    for r in range(rounds):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            start, cpu_start = time.perf_counter(), time.process_time()
            models[name].fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            wall[name].append((time.perf_counter() - start) / steps * 1000)
            cpu[name].append((time.process_time() - cpu_start) / steps * 1000)
    return {"wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    print(f"bfloat16 ops on one [{args.batch_size}, 73, 73, 16] tensor (ms):")
    for name, ms in elementwise_ops(args.batch_size).items():
        print(f"  {name:<24} {ms:6.2f}")
    result = step_ablation(args.batch_size, args.rounds)
    print(f"training step, batch {args.batch_size}, median of {args.rounds} rounds (ms per step):")
    base = "course model"
    for name in result["wall"]:
        wall, cpu = result["wall"][name], result["cpu"][name]
        print(f"  {name:<14} wall {statistics.median(wall):6.1f}  CPU {statistics.median(cpu):6.1f}"
              f"  (CPU / course model's, median of rounds: "
              f"{statistics.median(c / b for c, b in zip(cpu, result['cpu'][base])):.2f})")


if __name__ == "__main__":
    main()
