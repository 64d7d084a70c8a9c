"""Bring your own model, one run() that trains and scores, and one table of many runs."""

import dataclasses
import json

import keras
import numpy as np
import pytest
from keras import layers

from mnist_loc.artifacts import load_model
from mnist_loc.cli import main
from mnist_loc.config import TrainConfig
from mnist_loc.data import make_dataset
from mnist_loc.evaluation import evaluate, predict
from mnist_loc.runs import _finished_run, run
from mnist_loc.table import runs_table
from mnist_loc.training import ModelOutputError, train


@keras.saving.register_keras_serializable(package="mnist_loc_tests")
class TinyLocalizer(keras.Model):
    """A user's own subclassed model: one strided conv, global pooling, two heads."""

    def __init__(self, num_classes=10, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.features = layers.Conv2D(8, 5, strides=4, activation="relu")
        self.pool = layers.GlobalAveragePooling2D()
        self.classifier = layers.Dense(num_classes, activation="softmax")
        self.box = layers.Dense(4)

    def call(self, canvases):
        h = self.pool(self.features(canvases))
        return {"classification": self.classifier(h), "bounding_box": self.box(h)}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def tiny(canvas_size, num_classes):
    return TinyLocalizer(num_classes, name="tiny")


QUICK = dict(epochs=3, steps_per_epoch=6, batch_size=32, validation_canvases=1000, warmup_epochs=0)


class StopAfterEpoch(keras.callbacks.Callback):
    def __init__(self, last):
        super().__init__()
        self.last = last

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.last:
            self.model.stop_training = True


@pytest.mark.e2e
def test_a_subclassed_model_trains_resumes_bit_identically_evaluates_and_reloads(mnist_dir, tmp_path):
    config = TrainConfig.for_task("translated-60", **QUICK)
    whole = train(config, tiny, data_dir=mnist_dir, verbose=0)
    assert isinstance(whole.model, TinyLocalizer) and whole.model.optimizer.iterations.numpy() == 18
    backup = tmp_path / "backup"
    stopped = train(config, tiny, data_dir=mnist_dir, backup_dir=str(backup), verbose=0, callbacks=[StopAfterEpoch(2)])
    assert len(stopped.history["loss"]) == 2
    resumed = train(config, tiny, data_dir=mnist_dir, backup_dir=str(backup), verbose=0)
    assert resumed.resumed_from_epoch == 2 and resumed.history["loss"] == whole.history["loss"]
    # Wall and CPU seconds are summed over the interrupted process and the resumed one.
    assert resumed.train_seconds > stopped.train_seconds > 0 and resumed.train_cpu_seconds > stopped.train_cpu_seconds > 0
    assert len(whole.model.weights) == len(resumed.model.weights) == 6
    for a, b in zip(whole.model.weights, resumed.model.weights):
        assert a.numpy().tobytes() == b.numpy().tobytes(), "resumed weights must be the uninterrupted run's, bit for bit"

    test = make_dataset("test", task=config.task, batch_size=500, data_dir=mnist_dir).take(2)
    report, predictions = evaluate(resumed.model, test, return_predictions=True)
    assert report["num_examples"] == 1000 and predictions["boxes"].shape == (1000, 4)
    assert predictions["probabilities"].shape == (1000, 10)

    done = run(config, tiny, tmp_path / "run", data_dir=mnist_dir, callbacks=[])
    assert done.metrics["model"] == {"name": "tiny", "class": f"{__name__}.TinyLocalizer", "parameters": 334, "compute_dtypes": ["float32"]}
    reloaded = load_model(tmp_path / "run" / "model.keras")
    assert isinstance(reloaded, TinyLocalizer)
    again = evaluate(reloaded, make_dataset("test", task=config.task, batch_size=500, data_dir=mnist_dir))
    assert (again["accuracy"], again["mean_iou"]) == (done.report["accuracy"], done.report["mean_iou"])
    task = json.loads((tmp_path / "run" / "task.json").read_text())
    assert task["canvas_size"] == 60 and task["splits"] == "mnist-cluttered"
    canvases = make_dataset("test", task=config.task, batch_size=3, data_dir=mnist_dir).take(1)
    images = next(iter(canvases))[0].numpy()
    np.testing.assert_array_equal(predict(reloaded, images)["labels"], done.predictions["labels"][:3])

    # reuse=True reads the finished folder back: no training, the same numbers, the model file untouched.
    written = (tmp_path / "run" / "model.keras").stat().st_mtime_ns
    back = run(config, tiny, tmp_path / "run", data_dir=mnist_dir, callbacks=[], reuse=True)
    assert back.reused and not done.reused
    assert (back.train_seconds, back.train_cpu_seconds) == (done.train_seconds, done.train_cpu_seconds) and done.train_cpu_seconds > 0
    assert (back.report["accuracy"], back.report["mean_iou"]) == (done.report["accuracy"], done.report["mean_iou"])
    np.testing.assert_array_equal(back.predictions["boxes"], done.predictions["boxes"])
    assert back.history == done.history and (tmp_path / "run" / "model.keras").stat().st_mtime_ns == written
    # Only the same run is reused: another seed, split, model or test-time augmentation is not this run.
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_cpu_seconds"] == done.train_cpu_seconds
    assert _finished_run(tmp_path / "run", config, tiny, "test", False, 10) == metrics
    assert _finished_run(tmp_path / "run", dataclasses.replace(config, seed=1), tiny, "test", False, 10) is None
    assert _finished_run(tmp_path / "run", config, tiny, "validation", False, 10) is None
    assert _finished_run(tmp_path / "run", config, tiny, "test", True, 10) is None
    assert _finished_run(tmp_path / "run", config, None, "test", False, 10) is None  # the course model
    assert _finished_run(tmp_path / "elsewhere", config, tiny, "test", False, 10) is None


def functional(outputs_of):
    def build(canvas_size, num_classes):
        x = keras.Input((canvas_size, canvas_size, 1))
        h = layers.Dense(8)(layers.Flatten()(layers.AveragePooling2D(4)(x)))
        return keras.Model(x, outputs_of(h, num_classes))

    return build


@pytest.mark.parametrize("build,match", [
    (functional(lambda h, c: [layers.Dense(c, activation="softmax")(h), layers.Dense(4)(h)]), "must return a dict"),
    (functional(lambda h, c: {"classification": layers.Dense(c, activation="softmax")(h)}), r"exactly .* got keys \['classification'\]"),
    (functional(lambda h, c: {"classification": layers.Dense(3, activation="softmax")(h), "bounding_box": layers.Dense(4)(h)}), r"must be \[B, 10\] \(the task has 10 classes\), got \[2, 3\]"),
    (functional(lambda h, c: {"classification": layers.Dense(c)(h), "bounding_box": layers.Dense(4)(h)}), "must be probabilities .end it with a softmax"),
    (functional(lambda h, c: {"classification": layers.Dense(c, activation="softmax")(h), "bounding_box": layers.Dense(2)(h)}), r"'bounding_box' output must be \[B, 4\]"),
    (lambda canvas_size, num_classes: functional(lambda h, c: {"classification": layers.Dense(c, activation="softmax")(h), "bounding_box": layers.Dense(4)(h)})(28, num_classes),
     r"fails on float32 \[B, 60, 60, 1\] canvases"),
    (lambda canvas_size, num_classes: "not a model", "must return a keras.Model"),
], ids=["list", "missing head", "class count", "logits", "box width", "canvas size", "not a model"])
def test_a_model_whose_outputs_do_not_fit_is_refused_before_training(mnist_dir, tmp_path, build, match):
    config = TrainConfig.for_task("translated-60", **QUICK)
    with pytest.raises((ModelOutputError, TypeError), match=match):
        train(config, build, data_dir=mnist_dir, backup_dir=str(tmp_path / "backup"), verbose=0)
    assert not (tmp_path / "backup" / "state.json").exists(), "refused before any training step"


def fake_run(folder, task, model, recipe, seed, accuracy, mean_iou, at_50, seconds, cpu_seconds=None):
    folder.mkdir(parents=True)
    config = TrainConfig.for_task(task, seed=seed).to_dict()
    metrics = {"accuracy": accuracy, "mean_iou": mean_iou, "iou_at_50": at_50, "train_seconds": seconds,
               "config": config, "model": {"name": model}, "recipe": recipe}
    if cpu_seconds is not None:
        metrics["train_cpu_seconds"] = cpu_seconds
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_runs_table_groups_by_task_model_recipe_with_mean_and_range(tmp_path, capsys):
    folders = [
        fake_run(tmp_path / "a0", "cluttered-60", "mnist_loc", "default", 0, 0.985, 0.93, 0.995, 260.0, 500.0),
        fake_run(tmp_path / "b", "translated-60", "tiny", "default (epochs=1)", 0, 0.5, 0.4, 0.3, 10.0),
        fake_run(tmp_path / "a1", "cluttered-60", "mnist_loc", "default", 1, 0.989, 0.95, 0.999, 280.0, 540.0),
    ]
    table = runs_table(folders).splitlines()
    assert table[0] == "| task | model | recipe | seeds | error % | accuracy | mean IoU | IoU ≥ 0.5 | train s | CPU s |"
    # By hand: error 1.5 and 1.1 -> mean 1.3; accuracy 0.987; IoU 0.94; IoU >= 0.5 99.7%; 270 s; CPU 520 s.
    assert table[2] == ("| cluttered-60 | mnist_loc | default | 2 | 1.30 (1.10–1.50) | 0.9870 (0.9850–0.9890) | "
                        "0.9400 (0.9300–0.9500) | 99.70% (99.50%–99.90%) | 270 (260–280) | 520 (500–540) |")
    # A run written before CPU seconds were recorded shows a dash, not a zero.
    assert table[3] == "| translated-60 | tiny | default (epochs=1) | 1 | 50.00 | 0.5000 | 0.4000 | 30.00% | 10 | – |"
    assert len(table) == 4
    assert main(["table", *map(str, folders)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == table
    (tmp_path / "empty").mkdir()
    assert main(["table", str(tmp_path / "empty")]) == 1
    assert capsys.readouterr().err.strip() == f"mnist_loc: error: {tmp_path / 'empty'} is not a run folder (no metrics.json)"
