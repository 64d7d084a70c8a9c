import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_dir():
    """The prepared tfds folder: $TFDS_DATA_DIR, else ../shared/tensorflow_datasets.

    Missing data fails the test in CI (CI=true) and skips it elsewhere.
    """
    import tensorflow_datasets as tfds

    path = os.environ.get("TFDS_DATA_DIR") or str(ROOT.parent / "shared" / "tensorflow_datasets")
    if not tfds.builder("mnist", data_dir=path).is_prepared():
        message = f"MNIST is not prepared in {path}; set TFDS_DATA_DIR"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def mnist_digits(mnist_dir):
    """The real MNIST digits, cut as the course task cuts them, read once per session."""
    from mnist_loc.data import Digits

    return Digits.find("course", mnist_dir)


def synthetic_digits(n=12, seed=0):
    """Small fake digits: uint8 [n, 28, 28, 1] with every pixel non-zero, labels 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 10
    return images, labels


def fake_digits(train=64, validation=40, test=40, seed=0):
    """In-memory Digits of synthetic strokes (a bar whose position says the class), so a tiny
    model can learn them in a few steps; 10 classes."""
    from mnist_loc.data import Digits

    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.integers(0, 10, n)
        images = np.zeros((n, 28, 28, 1), np.uint8)
        for i, label in enumerate(labels):
            images[i, 4:24, 2 + 2 * label: 5 + 2 * label] = 255  # a vertical bar, its column by class
        return images, labels

    return Digits.from_arrays(split(train), split(validation), split(test))


def tiny_model(canvas_size, num_classes):
    """A user's own functional model with the two heads: pooled canvas, one dense layer."""
    import keras
    from keras import layers

    x = keras.Input((canvas_size, canvas_size, 1))
    h = layers.Dense(16, activation="relu")(layers.Flatten()(layers.AveragePooling2D(4)(x)))
    heads = {"classification": layers.Dense(num_classes, activation="softmax")(h), "bounding_box": layers.Dense(4)(h)}
    return keras.Model(x, heads, name="tiny")


def run_main(capsys, *args):
    """``python -m mnist_loc ARGS`` in this process (``cli.main``): ``(status, stdout, stderr)``.

    For what the command says and returns; whether TensorFlow's C++ lines stay out of a
    real process's stderr is checked in subprocesses (tests/test_cli.py)."""
    from mnist_loc.cli import main

    capsys.readouterr()
    try:
        status = main([str(a) for a in args])
    except SystemExit as exit:  # argparse's usage errors and --help
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err
