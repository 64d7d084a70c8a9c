"""Bring your own model, one run() that trains, scores and writes the run folder, and reuse of a finished one."""

import dataclasses
import json

import keras
import numpy as np
import pytest
from keras import layers

from mnist_loc import artifacts
from mnist_loc.artifacts import load_model
from mnist_loc.config import TrainConfig
from mnist_loc.data import canvases_at, make_dataset
from mnist_loc.evaluation import evaluate, predict
from mnist_loc.experiment import run
from mnist_loc.task import Task
from mnist_loc.inference import ModelOutputError
from mnist_loc.training import train

from conftest import fake_digits


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


QUICK = dict(epochs=3, steps_per_epoch=3, batch_size=16, warmup_epochs=0, task=Task(canvas_size=60))


@pytest.fixture(scope="module")
def digits():
    return fake_digits(train=64, validation=40, test=40)


class StopAfterEpoch(keras.callbacks.Callback):
    def __init__(self, last):
        super().__init__()
        self.last = last

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.last:
            self.model.stop_training = True


def test_a_subclassed_model_trains_resumes_bit_identically_evaluates_and_reloads(digits, tmp_path):
    config = TrainConfig(**QUICK)
    whole = train(config, digits, tiny, verbose=0)
    assert isinstance(whole.model, TinyLocalizer) and whole.model.optimizer.iterations.numpy() == 9
    backup = tmp_path / "backup"
    stopped = train(config, digits, tiny, backup_dir=str(backup), verbose=0, callbacks=[StopAfterEpoch(2)])
    assert len(stopped.history["loss"]) == 2
    resumed = train(config, digits, tiny, backup_dir=str(backup), verbose=0)
    assert resumed.resumed_from_epoch == 2 and resumed.history["loss"] == whole.history["loss"]
    # Wall and CPU seconds are summed over the interrupted process and the resumed one.
    assert resumed.train_seconds > stopped.train_seconds > 0 and resumed.train_cpu_seconds > stopped.train_cpu_seconds > 0
    assert len(whole.model.weights) == len(resumed.model.weights) == 6
    for a, b in zip(whole.model.weights, resumed.model.weights):
        assert a.numpy().tobytes() == b.numpy().tobytes(), "resumed weights must be the uninterrupted run's, bit for bit"

    report, predictions = evaluate(resumed.model, digits, task=config.task, return_predictions=True)
    assert report["num_examples"] == 40 and predictions["boxes"].shape == (40, 4)
    assert predictions["probabilities"].shape == (40, 10)

    done = run(config, tiny, tmp_path / "run", digits=digits, callbacks=[])
    assert done.metrics["model"] == {"name": "tiny", "class": f"{__name__}.TinyLocalizer", "parameters": 334, "compute_dtypes": ["float32"]}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["history.csv", "metrics.json", "model.keras", "predictions.png", "task.json"]
    reloaded = load_model(tmp_path / "run" / "model.keras")
    assert isinstance(reloaded, TinyLocalizer)
    again = evaluate(reloaded, make_dataset("test", digits, task=config.task, batch_size=500))
    assert (again["accuracy"], again["mean_iou"]) == (done.report["accuracy"], done.report["mean_iou"])
    task = json.loads((tmp_path / "run" / "task.json").read_text())
    assert task["canvas_size"] == 60 and task["class_names"] == [str(c) for c in range(10)]
    assert artifacts.read_history_csv(tmp_path / "run" / "history.csv") == done.history
    canvases = make_dataset("test", digits, task=config.task, batch_size=3).take(1)
    images = next(iter(canvases))[0].numpy()
    np.testing.assert_array_equal(predict(reloaded, images)["labels"], done.predictions["labels"][:3])

    # reuse=True reads the finished folder back: no training, the same numbers, the model file untouched.
    written = (tmp_path / "run" / "model.keras").stat().st_mtime_ns
    back = run(config, tiny, tmp_path / "run", digits=digits, callbacks=[], reuse=True)
    assert back.reused and not done.reused
    assert (back.train_seconds, back.train_cpu_seconds) == (done.train_seconds, done.train_cpu_seconds) and done.train_cpu_seconds > 0
    assert (back.report["accuracy"], back.report["mean_iou"]) == (done.report["accuracy"], done.report["mean_iou"])
    np.testing.assert_array_equal(back.predictions["boxes"], done.predictions["boxes"])
    assert back.history == done.history and (tmp_path / "run" / "model.keras").stat().st_mtime_ns == written
    # Only the same run is reused: another seed, split, model or test-time augmentation is not this run.
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_cpu_seconds"] == done.train_cpu_seconds
    model = done.metrics["model"]
    finished = lambda folder=tmp_path / "run", config=config, model=model, split="test", tta=False: artifacts.finished_run(folder, config.to_dict(), model, split, tta)  # noqa: E731
    assert finished() == metrics
    assert finished(config=dataclasses.replace(config, seed=1)) is None
    assert finished(split="validation") is None
    assert finished(tta=True) is None
    assert finished(model={"name": "mnist_loc", "parameters": 334}) is None and finished(model={"name": "tiny", "parameters": 335}) is None
    assert finished(folder=tmp_path / "elsewhere") is None


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
def test_a_model_whose_outputs_do_not_fit_is_refused_before_training(digits, tmp_path, build, match):
    with pytest.raises((ModelOutputError, TypeError), match=match):
        run(TrainConfig(**QUICK), build, tmp_path / "run", digits=digits, callbacks=[])
    assert not (tmp_path / "run").exists(), "refused before any training step, and the empty folder is gone"


SCENES = Task(canvas_size=32, box="ink", count=(0, 2), rules="air", canvases=(64, 40, 40))  # AIR's rules, small


def own_detector(canvas_size, num_classes):
    """A user's own functional detector: one strided conv and a 1x1 head, the detector's outputs."""
    x = keras.Input((canvas_size, canvas_size, 1))
    h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(x, {"detections": layers.Conv2D(num_classes + 4, 1)(h)}, name="own_detector")


def test_your_own_detector_trains_resumes_bit_identically_and_is_scored_with_coco(digits, tmp_path):
    config = TrainConfig(epochs=3, steps_per_epoch=3, batch_size=16, warmup_epochs=0, task=SCENES)
    whole = train(config, digits, own_detector, verbose=0)
    backup = tmp_path / "backup"
    train(config, digits, own_detector, backup_dir=str(backup), verbose=0, callbacks=[StopAfterEpoch(2)])
    resumed = train(config, digits, own_detector, backup_dir=str(backup), verbose=0)
    assert resumed.resumed_from_epoch == 2 and resumed.history["loss"] == whole.history["loss"]
    for a, b in zip(whole.model.weights, resumed.model.weights):
        assert a.numpy().tobytes() == b.numpy().tobytes()
    done = run(config, own_detector, tmp_path / "run", digits=digits, callbacks=[])
    assert {"ap", "ap50", "count_accuracy", "fully_right", "count_threshold"} <= set(done.metrics)
    assert done.report["num_examples"] == 40 and done.predictions["boxes"].shape == (40, 10, 4)
    assert "images" not in done.predictions, "run() keeps no canvases: its picture draws its own ten again"
    found = predict(done.model, canvases_at("test", range(3), digits=digits, task=SCENES)[0])
    assert set(found) == {"boxes", "labels", "scores", "counts"} and found["counts"].shape == (3,)
    assert np.all(np.diff(found["scores"], axis=1) <= 0)


def test_a_finished_run_of_another_detector_shape_is_reused_and_only_by_its_own_shape(digits, tmp_path, monkeypatch):
    from mnist_loc import detection

    config = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=16, warmup_epochs=0, task=SCENES, detector="pyramid")
    done = run(config, None, tmp_path / "run", digits=digits, callbacks=[])
    assert done.model.count_params() > 500_000, "the pyramid, not the small default"
    with monkeypatch.context() as patch:  # reuse compares the default model by name: it builds none
        patch.setattr(detection, "default_model", lambda *a, **k: pytest.fail("reuse built a model"))
        back = run(config, None, tmp_path / "run", digits=digits, callbacks=[], reuse=True)
    assert back.reused and back.metrics["ap"] == done.metrics["ap"]
    other = run(dataclasses.replace(config, detector="wide"), None, tmp_path / "run", digits=digits, callbacks=[], reuse=True)
    assert not other.reused and other.model.count_params() < 200_000


@pytest.mark.parametrize("build,match", [
    (lambda canvas_size, num_classes: TinyLocalizer(num_classes), r"needs a model with outputs \{'detections': \[B, H, H, 14\]\} with H = 16/8"),
    (lambda canvas_size, num_classes: keras.Model(*(lambda x: (x, {"detections": layers.Conv2D(num_classes + 4, 1, strides=3)(x)}))(
        keras.Input((canvas_size, canvas_size, 1)))), r"got \[2, 11, 11, 14\]"),
], ids=["two heads", "wrong grid"])
def test_a_model_that_cannot_detect_is_refused_before_training(digits, tmp_path, build, match):
    with pytest.raises(ModelOutputError, match=match):
        run(TrainConfig(epochs=1, steps_per_epoch=1, batch_size=16, task=SCENES), build, tmp_path / "run", digits=digits, callbacks=[])
    assert not (tmp_path / "run").exists()


def counting_detector(width):
    """A user's own detector whose count head says 0 .. width - 1 digits."""
    def build(canvas_size, num_classes):
        x = keras.Input((canvas_size, canvas_size, 1))
        h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        count = layers.Dense(width, activation="softmax")(layers.GlobalAveragePooling2D()(h))
        return keras.Model(x, {"detections": layers.Conv2D(num_classes + 4, 1)(h), "count": count})
    return build


def test_a_count_head_narrower_than_the_tasks_count_is_refused_before_any_step(digits, tmp_path):
    config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=16, task=SCENES)  # up to 2 digits: 3 columns
    with pytest.raises(ModelOutputError, match=r"'count' output has 2 columns .* needs at least 3"):
        run(config, counting_detector(2), tmp_path / "run", digits=digits, callbacks=[])
    assert not (tmp_path / "run").exists()
    assert train(config, digits, counting_detector(3), verbose=0).history["loss"]


def test_the_rules_alone_make_a_task_several_digits_so_one_digit_by_airs_rules_trains_a_detector(digits):
    task = SCENES.replace(count=(1, 1))
    assert task.kind == "detection" and Task().kind == "localization"
    result = train(TrainConfig(epochs=1, steps_per_epoch=2, batch_size=16, task=task), digits, verbose=0)
    assert set(result.model.output) == {"detections", "count"} and result.model.output["count"].shape[-1] == 2
    with pytest.raises(ValueError, match="one digit per canvas"):
        Task(count=(0, 2))


def test_a_detector_on_one_digit_a_canvas_answers_with_its_best_detection(digits, tmp_path):
    config = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=16, warmup_epochs=0, task=Task(canvas_size=60))
    done = run(config, own_detector, tmp_path / "run", digits=digits, callbacks=[])
    assert {"accuracy", "mean_iou", "per_class"} <= set(done.report) and "ap" not in done.report
    assert done.predictions["boxes"].shape == (40, 4) and (tmp_path / "run" / "predictions.png").exists()
    back = run(config, own_detector, tmp_path / "run", digits=digits, callbacks=[], reuse=True)
    assert back.reused and back.report["accuracy"] == done.report["accuracy"]
