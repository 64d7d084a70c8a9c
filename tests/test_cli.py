"""The command line. Real ``python -m mnist_loc`` processes where the process is the point
(train's clean stderr, a missing image's exact stderr, the offline first run); what a command says and returns is checked in-process (``cli.main``)."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, fake_digits, run_main


def cli_env(**changes):
    # The user's environment, not the test session's: no TF_CPP_MIN_LOG_LEVEL set for them.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "PYTHONPATH": str(ROOT), **changes}


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "mnist_loc", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=cli_env())


@pytest.fixture(scope="module")
def trained(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_cli("train", "--epochs", 1, "--steps-per-epoch", 50, "--validation-canvases", 500, "--data-dir", mnist_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.slow
def test_train_writes_everything(trained):
    out, result = trained
    assert {"model.keras", "metrics.json", "history.csv", "predictions.png"} <= set(os.listdir(out))
    assert not (out / "backup").exists(), "a finished run removes its backup"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_examples"] == 10000 and metrics["train_seconds"] > 0
    assert metrics["config"]["epochs"] == 1 and metrics["config"]["steps_per_epoch"] == 50
    assert (out / "history.csv").read_text().splitlines()[0].startswith("epoch,")
    assert len((out / "history.csv").read_text().splitlines()) == 2
    assert "epoch   1/1" in result.stdout and "accuracy" in result.stdout
    assert result.stderr == "", "TensorFlow's C++ log lines must not reach a CLI user"


@pytest.mark.slow
def test_evaluate_reproduces_train_metrics_exactly(trained, mnist_dir, tmp_path, capsys):
    out, _ = trained
    report_path = tmp_path / "eval.json"
    status, stdout, stderr = run_main(capsys, "evaluate", "--model", out / "model.keras", "--data-dir", mnist_dir, "--json", report_path)
    assert status == 0, stderr
    report = json.loads(report_path.read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("num_examples", "accuracy", "mean_iou", "median_iou", "iou_at_50", "iou_at_60", "iou_at_75", "box_mse", "detection_accuracy", "per_class"):
        assert report[key] == metrics[key], key
    assert "mean IoU" in stdout and "detection accuracy" in stdout


def test_predict_png_and_npy_and_draw(tmp_path, capsys):
    from matplotlib.image import imsave

    from mnist_loc.data import canvases_at
    from mnist_loc.model import build_model

    out = tmp_path / "run"
    out.mkdir()
    build_model().save(out / "model.keras")  # no task.json beside it: the course task at the model's size
    canvases, labels, boxes = canvases_at("test", [0, 1], digits=fake_digits())
    npy = tmp_path / "digit.npy"
    np.save(npy, canvases[0, ..., 0])
    png = tmp_path / "digit.png"
    imsave(png, canvases[1, ..., 0], cmap="gray", vmin=0, vmax=1)
    small = tmp_path / "small.npy"  # 40x50: placed top-left on the canvas
    np.save(small, (canvases[0, :40, :50, 0] * 255).astype(np.uint8))
    drawn, explained = tmp_path / "drawn.png", tmp_path / "explained.png"
    status, stdout, stderr = run_main(capsys, "predict", "--model", out / "model.keras", npy, png, small, "--draw", drawn, "--explain", explained)
    assert status == 0, stderr
    lines = stdout.strip().splitlines()
    assert lines[0].startswith(f"{npy}: digit ") and "confidence" in lines[0] and "px" in lines[0]
    assert len([l for l in lines if "digit" in l]) == 3
    assert drawn.exists() and drawn.stat().st_size > 1000
    from matplotlib.image import imread

    picture = imread(explained)  # 3 rows (canvas, both heads) of 3 images: taller than the one-row drawing
    assert picture.shape[0] > imread(drawn).shape[0] and f"wrote {explained}" in stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--epochs", "-1"], "must be >= 0"),
        (["train", "--batch-size", "0"], "must be >= 1"),
        (["train", "--steps-per-epoch", "x"], "expected an integer"),
        (["train", "--data-dir", "README.md"], "not a directory"),
        (["evaluate", "--model", "/no/such/model.keras"], "model file not found"),
        (["evaluate", "--model", "README.md"], "not a .keras model file"),
        (["evaluate", "--model", "x.keras", "--split", "dev"], "invalid choice"),
        (["predict", "--model", "/no/such/model.keras", "a.png"], "model file not found"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # README.md: a file that is not a folder nor a model
    status, stdout, stderr = run_main(capsys, *args)
    assert status != 0 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], stderr


@pytest.mark.slow
def test_predict_missing_image_is_one_line(trained):
    out, _ = trained
    result = run_cli("predict", "--model", out / "model.keras", "/no/such.png", timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == "mnist_loc: error: image not found: /no/such.png"


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_help_says_what_it_writes(command, capsys):
    status, stdout, _ = run_main(capsys, command, "--help")
    assert status == 0
    words = {"train": "metrics.json", "evaluate": "JSON", "predict": "box"}
    assert words[command] in stdout


@pytest.mark.slow
def test_offline_first_run_ends_in_one_clear_error_within_30_s(tmp_path):
    # README's first command on a machine without internet and without a prepared MNIST. The
    # source is a closed local port (tests never reach the internet); the CLI is the real one.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
    script = (
        "import sys\n"
        "from mnist_loc.tf_runtime import import_tensorflow_quietly\n"
        "import_tensorflow_quietly()\n"
        "import tensorflow_datasets as tfds\n"
        "tfds.builder_cls('mnist').URL = sys.argv[1]\n"
        "from mnist_loc.cli import main\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    env = cli_env(HOME=str(tmp_path), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    env.pop("TFDS_DATA_DIR", None)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script, url, "train", "--out", tmp_path / "run"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert time.monotonic() - start < 30
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0] == f"mnist_loc: downloading mnist once (about 11 MiB) from {url} into {tmp_path / 'tensorflow_datasets'}"
    assert lines[1].startswith(f"mnist_loc: error: cannot download mnist from {url}: the network is unreachable")
    assert "TFDS_DATA_DIR" in lines[1] and "machine with internet" in lines[1]
    assert not (tmp_path / "tensorflow_datasets").exists()


def test_the_task_travels_with_the_model(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    status, stdout, stderr = run_main(capsys, "train", "--task", "sized", "--clutter", 2, "--epochs", 1, "--steps-per-epoch", 20, "--validation-canvases", 500, "--data-dir", mnist_dir, "--out", out)
    assert status == 0, stderr
    task = json.loads((out / "task.json").read_text())
    assert task == {"dataset": "mnist", "canvas_size": 75, "scale": [0.5, 2.0], "box": "ink", "clutter": 2, "clutter_size": 8,
                    "clutter_overlap": False, "splits": "tfds", "count": [1, 1], "rules": "mnist_loc", "canvases": None,
                    "class_names": [str(d) for d in range(10)]}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and set(metrics["by_size"]) == {"small", "medium", "large"}
    assert metrics["recipe"] == "sized recipe (epochs=1, steps_per_epoch=20)", "the refined task keeps the sized task's recipe"
    assert "small < 20^2" in stdout
    # No task flags: evaluate rebuilds the same canvases from task.json and gets the same numbers.
    report_path = tmp_path / "eval.json"
    status, stdout, stderr = run_main(capsys, "evaluate", "--model", out / "model.keras", "--data-dir", mnist_dir, "--json", report_path)
    assert status == 0, stderr
    assert "scale 0.5-2, ink boxes, 2 distractors of 8x8 (outside the target)" in stdout
    report = json.loads(report_path.read_text())
    for key in ("accuracy", "mean_iou", "iou_at_50", "by_size", "per_class"):
        assert report[key] == metrics[key], key


@pytest.mark.parametrize("args,message", [(["--scale", "2", "1"], "0.25 <= lo <= hi"), (["--scale", "1", "3"], "larger than the 75 px canvas")])
def test_bad_task_flags_are_one_line(args, message, capsys, tmp_path):
    status, _, stderr = run_main(capsys, "train", *args, "--epochs", 0, "--out", tmp_path / "run")
    assert status != 0 and len(stderr.strip().splitlines()) == 1 and message in stderr


@pytest.mark.parametrize("flags, expected", [
    ([], "default"), (["--preset", "fast"], "fast"), (["--preset", "lab"], "lab"),
    (["--task", "sized"], "sized"), (["--scale", "0.5", "2", "--box", "ink"], "course-refined"), (["--preset", "fast", "--epochs", "5", "--seed", "2"], "fast+"),
])
def test_presets_pick_the_recipe_and_flags_go_on_top(flags, expected):
    from mnist_loc.cli import build_parser, train_config
    from mnist_loc.config import TrainConfig
    from mnist_loc.task import Task

    config = train_config(build_parser().parse_args(["train", *flags]))
    assert config == {
        "default": TrainConfig(), "fast": TrainConfig.fast(), "lab": TrainConfig.lab(),
        "sized": TrainConfig.for_task("sized"), "fast+": TrainConfig.fast(epochs=5, seed=2),
        "course-refined": TrainConfig(task=Task(scale=(0.5, 2.0), box="ink")),  # the recipe stays the named task's
    }[expected]
    assert (config == TrainConfig()) == (expected == "default")


def test_detection_on_the_command_line_train_evaluate_table_predict(mnist_dir, tmp_path, capsys):
    from matplotlib.image import imsave

    out = tmp_path / "multi"
    status, stdout, stderr = run_main(capsys, "train", "--task", "multi-mnist", "--epochs", 1, "--steps-per-epoch", 30,
                                      "--validation-canvases", 500, "--data-dir", mnist_dir, "--out", out)
    assert status == 0, stderr
    assert "epoch   1/1" in stdout and "val_loss" in stdout and "count accuracy" in stdout
    assert {"model.keras", "task.json", "metrics.json", "history.csv", "predictions.png"} <= set(os.listdir(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_examples"] == 10_000 and metrics["task"]["rules"] == "air" and 0.05 <= metrics["count_threshold"] <= 0.95
    status, again, stderr = run_main(capsys, "evaluate", "--model", out / "model.keras", "--data-dir", mnist_dir, "--json", tmp_path / "e.json")
    assert status == 0, stderr
    report = json.loads((tmp_path / "e.json").read_text())
    for key in ("num_examples", "num_digits", "ap", "ap50", "ap75", "ar10", "ap50_per_class", "count_accuracy", "fully_right",
                "count_threshold", "count_confusion"):
        assert report[key] == metrics[key], key
    same_lines = lambda text: [line for line in text.splitlines() if line.startswith(("AP", "count", "fully", "canvases"))]  # noqa: E731
    assert same_lines(again) == same_lines(stdout) and len(same_lines(again)) == 6
    status, table, _ = run_main(capsys, "table", out)
    assert status == 0 and "| multi-mnist | mnist_loc_detector | default (epochs=1, steps_per_epoch=30) | 1 | – | – | – | – |" in table

    from mnist_loc.data import Digits, canvases_at

    images, labels, _ = canvases_at("test", [0, 1], digits=Digits.find("multi-mnist", mnist_dir), task="multi-mnist")
    paths = [tmp_path / "a.png", tmp_path / "b.npy"]
    imsave(paths[0], images[0, ..., 0], cmap="gray", vmin=0, vmax=1)
    np.save(paths[1], images[1, ..., 0])
    status, stdout, stderr = run_main(capsys, "predict", "--model", out / "model.keras", *paths, "--draw", tmp_path / "d.png")
    assert status == 0, stderr
    assert stdout.splitlines()[0].startswith(f"{paths[0]}: ") and " digit" in stdout.splitlines()[0]
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"

    big = tmp_path / "big.npy"
    np.save(big, np.zeros((60, 60), np.float32))
    status, _, stderr = run_main(capsys, "predict", "--model", out / "model.keras", big)
    assert status != 0 and len(stderr.strip().splitlines()) == 1 and "larger than the model's 50x50 canvas" in stderr


def test_a_single_digit_model_on_a_multi_digit_task_is_one_line(mnist_dir, tmp_path, capsys):
    from mnist_loc.model import build_model
    from mnist_loc.task import TASKS

    build_model(50).save(tmp_path / "model.keras")
    (tmp_path / "task.json").write_text(json.dumps(TASKS["multi-mnist"].to_dict()))
    status, _, stderr = run_main(capsys, "evaluate", "--model", tmp_path / "model.keras", "--data-dir", mnist_dir)
    assert status != 0 and len(stderr.strip().splitlines()) == 1 and "needs a model with the detector's outputs" in stderr
    status, _, stderr = run_main(capsys, "train", "--task", "multi-mnist", "--box", "patch", "--out", tmp_path / "run")
    assert status != 0 and len(stderr.strip().splitlines()) == 1 and "tight ink boxes" in stderr
