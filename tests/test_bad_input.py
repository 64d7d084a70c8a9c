"""Every kind of bad input gets a clear error naming the problem: never a hang, a NaN or a wrong answer.

One test (or parametrized group) per line of the reliability issue's list.
"""

import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnist_loc import artifacts
from mnist_loc.artifacts import ModelFileError, load_model
from mnist_loc.boxes import iou
from mnist_loc.config import TrainConfig
from mnist_loc.data import Digits, make_dataset
from mnist_loc.evaluation import evaluate, predict
from mnist_loc.model import build_model, compile_model
from mnist_loc.task import Task
from mnist_loc.tfds_source import DataNotFoundError
from mnist_loc.training import TrainingDiverged, train

from conftest import ROOT, fake_digits, run_main, tiny_model

S = 75


@pytest.fixture(scope="module")
def model():
    return build_model()


# --- images of the wrong rank, size, dtype or channel count; NaN/inf pixels; empty arrays ---

@pytest.mark.parametrize(
    "images,error,match",
    [
        (np.zeros((2, 2, S, S, 1), np.float32), ValueError, "rank 2 to 4"),
        (np.zeros((S,), np.float32), ValueError, "rank 2 to 4"),
        (np.zeros((1, 28, 28, 1), np.float32), ValueError, "must be 75x75 canvases"),
        (np.zeros((S, S, 3), np.float32), ValueError, "1 channel"),
        (np.zeros((1, S, S, 2), np.float32), ValueError, "1 channel"),
        (np.zeros((1, S, S, 1), np.int32), TypeError, "uint8 or float"),
        (np.zeros((1, S, S, 1), bool), TypeError, "uint8 or float"),
        (np.zeros((0, S, S, 1), np.float32), ValueError, "empty"),
        (np.full((1, S, S, 1), np.nan, np.float32), ValueError, "NaN"),
        (np.full((1, S, S, 1), np.inf, np.float32), ValueError, "NaN or infinite"),
        (np.full((1, S, S, 1), 255.0, np.float32), ValueError, r"in \[0, 1\]"),
    ],
)
def test_predict_refuses_bad_images(model, images, error, match):
    with pytest.raises(error, match=match):
        predict(model, images)


def test_evaluate_refuses_bad_datasets(model):
    digits = fake_digits(test=4)
    with pytest.raises(ValueError, match="model expects 75x75"):
        evaluate(model, digits, task=Task(canvas_size=40))
    good = make_dataset("test", digits, batch_size=2)
    with pytest.raises(TypeError, match="float32"):
        evaluate(model, good.map(lambda x, y: (tf.cast(x * 255, tf.uint8), y)))
    with pytest.raises(ValueError, match="rank 4"):
        evaluate(model, good.unbatch())
    with pytest.raises(ValueError, match="1 channel"):
        evaluate(model, good.map(lambda x, y: (tf.concat([x, x], -1), y)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        evaluate(model, good.map(lambda x, y: (x * np.nan, y)))
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, good.take(0))
    with pytest.raises(ValueError, match="yield"):
        evaluate(model, good.map(lambda x, y: x))


# --- boxes of the wrong shape or with NaN coordinates to iou() ---

@pytest.mark.parametrize(
    "pred,true,match",
    [
        (np.zeros((3, 5)), np.zeros((3, 5)), r"shape \(4,\) or \(N, 4\)"),
        (np.zeros((3, 4)), np.zeros((2, 4)), "same shape"),
        (np.zeros(4), np.zeros((1, 4)), "same shape"),
        (np.array([0, 0, np.nan, 1]), np.zeros(4), "NaN"),
        (np.zeros(4), np.array([[np.nan] * 4]), "NaN"),
    ],
)
def test_iou_refuses_bad_boxes(pred, true, match):
    with pytest.raises(ValueError, match=match):
        iou(pred, true)


# --- canvas_size, batch_size, split, epochs, steps ---

@pytest.mark.parametrize("canvas_size", [27, 0, 75.0, "75"])
def test_bad_canvas_size(canvas_size, tmp_path):
    with pytest.raises(ValueError, match="canvas_size must be (an integer|>= 28)"):
        Task(canvas_size=canvas_size)
    with pytest.raises(ValueError, match="canvas_size"):
        build_model(canvas_size)


@pytest.mark.parametrize("batch_size,error", [(0, ValueError), (-3, ValueError), (1.5, TypeError)])
def test_bad_batch_size(batch_size, error):
    with pytest.raises(error, match="batch_size"):
        make_dataset("test", fake_digits(), batch_size=batch_size)
    with pytest.raises(error, match="batch_size"):
        TrainConfig(batch_size=batch_size)


def test_unknown_split():
    with pytest.raises(ValueError, match=r"unknown split 'valid'; valid splits are \['test', 'train', 'validation'\]"):
        make_dataset("valid", fake_digits())


@pytest.mark.parametrize("arrays, match", [
    (dict(train=(np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, int))), r"train images must be uint8 \[N>0, 28, 28, 1\]"),
    (dict(train=(np.zeros((4, 32, 32), np.uint8), np.zeros(4, int))), r"got uint8 \(4, 32, 32, 1\)"),
    (dict(train=(np.zeros((0, 28, 28), np.uint8), np.zeros(0, int))), "N>0"),
    (dict(test=(np.zeros((4, 28, 28), np.uint8), np.zeros(3, int))), r"test labels must be integers of shape \[4\]"),
    (dict(validation=(np.zeros((4, 28, 28), np.uint8), np.array([0, 1, 2, 10]))), r"labels must lie in \[0, 10\)"),
])
def test_digits_of_the_wrong_shape_dtype_or_labels_are_refused_once_when_made(arrays, match):
    good = (np.zeros((4, 28, 28), np.uint8), np.arange(4))
    splits = {"train": good, "validation": good, "test": good, **arrays}
    with pytest.raises(ValueError, match=match):
        Digits.from_arrays(**splits, class_names=[str(c) for c in range(10)])


@pytest.mark.parametrize("field", ["epochs", "steps_per_epoch"])
def test_negative_epochs_or_steps(field):
    with pytest.raises(ValueError, match=f"{field} must be >= "):
        TrainConfig(**{field: -1})


# --- model files: missing, truncated, not Keras, unsafe (Lambda) ---

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    artifacts.save_model(compile_model(build_model()), path)
    return path


def test_saved_model_loads(saved_model):
    assert load_model(saved_model).count_params() == 426_638


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "nope.keras")


def test_truncated_model_file(saved_model, tmp_path):
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(saved_model.read_bytes()[: saved_model.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(truncated)


def test_not_a_keras_file(tmp_path):
    text = tmp_path / "notes.keras"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a Keras model"):
        load_model(text)
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "not a model")
    with pytest.raises(ModelFileError, match="no config.json"):
        load_model(other_zip)
    h5 = tmp_path / "model.h5"
    h5.write_text("legacy")
    with pytest.raises(ModelFileError, match="not a .keras model file"):
        load_model(h5)


def test_lambda_layer_is_refused_by_safe_loading(tmp_path):
    inputs = keras.Input((S, S, 1))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelFileError, match="Lambda layer, which would run arbitrary code"):
        load_model(path)


# --- MNIST not available offline ---

def test_missing_mnist_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)  # else the prepared copy there is found
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="data_dir=.*--no-download|--no-download.*data_dir="):
        Digits.find(data_dir=str(tmp_path), download=False)


@pytest.mark.slow
def test_missing_mnist_in_a_fresh_process_says_what_to_do_without_absl_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    script = "from mnist_loc.data import Digits\nDigits.find(download=False)"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "DataNotFoundError" in result.stderr and "TFDS_DATA_DIR" in result.stderr and "--no-download" in result.stderr
    assert "Variant folder" not in result.stderr  # absl's warning about a folder that is not there


# --- a loss that becomes NaN during training ---

def test_nan_loss_stops_training_with_a_message(tmp_path):
    config = TrainConfig(epochs=2, steps_per_epoch=3, batch_size=16, learning_rate=1e38, schedule="constant", task=Task(canvas_size=32))
    with pytest.raises(TrainingDiverged, match="NaN or infinite in epoch 1"):
        train(config, fake_digits(), tiny_model, backup_dir=str(tmp_path / "backup"), verbose=0)
    assert not (tmp_path / "backup" / "state.json").exists(), "a diverged epoch is never checkpointed"


@pytest.mark.slow
def test_nan_loss_in_cli_leaves_nothing_half_written(mnist_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mnist_loc", "train", "--epochs", "1", "--steps-per-epoch", "30", "--validation-canvases", "500",
         "--learning-rate", "1e38", "--data-dir", mnist_dir, "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("mnist_loc: error: the loss became NaN or infinite")
    leftovers = [p.name for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert leftovers == []


# --- the same bad inputs through the command line: one line, non-zero exit ---

@pytest.mark.parametrize(
    "name,content,message",
    [
        ("nan.npy", np.full((S, S), np.nan, np.float32), "NaN or infinite"),
        ("big.npy", np.zeros((S + 1, S), np.float32), "larger than the model's 75x75 canvas"),
        ("cube.npy", np.zeros((2, S, S), np.float32), "expected a 2-D grayscale image"),
        ("ints.npy", np.zeros((S, S), np.int64), "must be uint8 or float"),
        ("empty.npy", np.zeros((0, 0), np.float32), "empty"),
        ("digit.jpg", None, "unsupported image type"),
        ("broken.png", b"not a png", "not a PNG file"),
    ],
)
def test_cli_predict_refuses_bad_images(saved_model, tmp_path, name, content, message, capsys):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_bytes(content or b"")
    status, stdout, stderr = run_main(capsys, "predict", "--model", saved_model, path)
    assert status == 1 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnist_loc: error:") and message in lines[0], stderr
