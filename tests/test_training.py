import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mnist_loc.config import TrainConfig
from mnist_loc.data import make_dataset
from mnist_loc.evaluation import evaluate
from mnist_loc.task import Task
from mnist_loc.training import BackupError, EpochProgress, learning_rate_schedule, steps_per_call, train

from conftest import ROOT, fake_digits

# The course model on 32 px canvases of fake digits: every step is milliseconds.
SMALL = dict(task=Task(canvas_size=32), batch_size=16, validation_canvases=40)


@pytest.fixture(scope="module")
def digits():
    return fake_digits(train=96)


def test_config_validates_its_fields():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=-1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        TrainConfig(steps_per_epoch=0)
    with pytest.raises(ValueError, match="box_loss"):
        TrainConfig(box_loss="huber")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=float("nan"))
    with pytest.raises(ValueError, match="steps_per_execution"):
        TrainConfig(steps_per_execution=0)
    with pytest.raises(ValueError, match="ema_momentum"):
        TrainConfig(ema_momentum=1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=-0.1)
    with pytest.raises(ValueError, match=r"mixed_precision must be one of \(None, True, False\)"):
        TrainConfig(mixed_precision="yes")
    with pytest.raises(ValueError, match="validation_canvases"):
        TrainConfig(validation_canvases=0)
    lab = TrainConfig.lab()
    assert (lab.batch_size, lab.learning_rate, lab.box_loss, lab.box_loss_weight, lab.mixed_precision) == (64, 1e-3, "mse", 1.0, False)


def test_schedule_warms_up_then_decays_to_zero():
    schedule = learning_rate_schedule(TrainConfig(epochs=10, warmup_epochs=1, learning_rate=3e-3), steps_per_epoch=100)
    lr = [float(schedule(step)) for step in (0, 50, 100, 550, 1000)]
    assert lr[0] < lr[1] < lr[2] == pytest.approx(3e-3)
    assert lr[2] > lr[3] > lr[4] and lr[4] == pytest.approx(0.0, abs=1e-9)
    assert learning_rate_schedule(TrainConfig.lab(), 100) == 1e-3


@pytest.mark.parametrize("steps,most,expected", [(429, 16, 13), (50, 16, 10), (150, 16, 15), (7, 16, 7), (17, 16, 1), (430, 1, 1)])
def test_steps_per_call_divides_the_epoch(steps, most, expected):
    assert steps_per_call(TrainConfig(steps_per_execution=most), steps) == expected


@pytest.mark.slow
def test_end_to_end_learns_on_real_mnist(mnist_digits):
    # 450 steps of the default recipe with a float32 trunk, so the outcome is the same kind on every
    # CPU: a bfloat16 trunk reached accuracy 0.920 where bf16 is native (AVX-512 BF16 / AMX) and 0.773
    # under oneDNN's emulation on an AVX2-only CPU (5x slower per step); float32 0.934 there.
    config = TrainConfig(epochs=3, steps_per_epoch=150, warmup_epochs=0.5, mixed_precision=False, validation_canvases=1000)
    progress_lines = []
    result = train(config, mnist_digits, verbose=0, callbacks=[EpochProgress(3, print_fn=lambda *a, **k: progress_lines.append(a[0]))])
    assert len(progress_lines) == 3 and progress_lines[-1].startswith("epoch   3/3")
    assert len(result.history["loss"]) == 3 and len(result.history["val_bounding_box_mean_iou"]) == 3
    test = make_dataset("test", mnist_digits, batch_size=500).take(2)  # 1,000 canvases
    report = evaluate(result.model, test)
    print("e2e (450 steps):", {k: report[k] for k in ("num_examples", "accuracy", "mean_iou", "iou_at_60")})
    assert report["num_examples"] == 1000
    assert report["accuracy"] > 0.8  # chance is 0.1
    assert report["mean_iou"] > 0.5  # a box in a random place scores ~0.1


def test_same_seed_gives_identical_weights_and_leaves_op_determinism_off(digits):
    from tensorflow.python.framework import config as tf_config

    config = TrainConfig(epochs=2, steps_per_epoch=3, **SMALL)
    first = [w.numpy() for w in train(config, digits, verbose=0).model.trainable_weights]
    assert not tf_config.is_op_determinism_enabled(), "train() must not leave process-wide determinism on"
    second = [w.numpy() for w in train(config, digits, verbose=0).model.trainable_weights]
    assert len(first) == len(second) == 12  # a kernel and a bias for 3 convs, the dense layer and 2 heads
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()
    other = [w.numpy() for w in train(dataclasses.replace(config, seed=1), digits, verbose=0).model.trainable_weights]
    assert not np.array_equal(first[0], other[0]), "another seed must give other weights"
    one_step_calls = train(dataclasses.replace(config, steps_per_execution=1), digits, verbose=0)
    assert one_step_calls.model.optimizer.iterations.numpy() == 6
    for a, b in zip(first, [w.numpy() for w in one_step_calls.model.trainable_weights]):
        assert a.tobytes() == b.tobytes(), "steps per call must not change the weights"


def test_progress_prints_one_line_per_epoch(digits):
    lines = []
    result = train(TrainConfig(epochs=3, steps_per_epoch=2, **SMALL), digits, verbose=0,
                   callbacks=[EpochProgress(3, print_fn=lambda *a, **k: lines.append(a[0]))])
    assert [line[:11] for line in lines] == ["epoch   1/3", "epoch   2/3", "epoch   3/3"] and "val_iou" in lines[-1]
    assert len(result.history["loss"]) == 3 and len(result.history["val_bounding_box_mean_iou"]) == 3


@pytest.mark.slow
def test_killed_training_resumes_with_the_same_command(mnist_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mnist_loc", "train", "--epochs", "3", "--steps-per-epoch", "40", "--validation-canvases", "500", "--data-dir", mnist_dir, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "backup" / "state.json"
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    assert state.exists(), "the first epoch was not backed up"
    done = json.loads(state.read_text())["epochs_done"]
    assert 1 <= done < 3
    assert not (out / "model.keras").exists() and not (out / "metrics.json").exists()
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed after epoch {done}" in resumed.stdout
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    assert json.loads((out / "metrics.json").read_text())["config"]["epochs"] == 3
    assert not (out / "backup").exists()


@pytest.mark.parametrize("recipe", [{}, {"ema_momentum": 0.9, "label_smoothing": 0.1}], ids=["default", "ema"])
def test_resume_from_backup_matches_uninterrupted_run(digits, tmp_path, recipe):
    config = TrainConfig(epochs=3, steps_per_epoch=4, **SMALL, **recipe)
    whole = train(config, digits, verbose=0)
    backup = tmp_path / "backup"
    # Stop after 2 epochs: a config with fewer epochs would not match, so interrupt by callback.
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    train(config, digits, backup_dir=str(backup), verbose=0, callbacks=[StopAfter()])
    state = json.loads((backup / "state.json").read_text())
    assert state["epochs_done"] == 2
    assert sorted(p.name for p in backup.iterdir()) == sorted(["state.json", state["weights"]])  # older epochs cleaned up
    resumed = train(config, digits, backup_dir=str(backup), verbose=0)
    assert resumed.resumed_from_epoch == 2
    assert resumed.history == whole.history, "the history resumes with the weights"
    for a, b in zip(whole.model.weights, resumed.model.weights):
        assert a.numpy().tobytes() == b.numpy().tobytes(), "resumed weights are the uninterrupted run's, bit for bit"


def test_weight_averaging_validates_and_returns_the_average(digits):
    config = TrainConfig(epochs=2, steps_per_epoch=4, ema_momentum=0.9, **SMALL)
    result = train(config, digits, verbose=0)
    average = result.model.optimizer._model_variables_moving_average
    assert len(average) == len(result.model.trainable_variables) == 12
    for a, w in zip(average, result.model.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), w.numpy())
    # The last epoch's validation scored these same (averaged) weights, on the 40 validation canvases.
    logs = result.model.evaluate(make_dataset("validation", digits, task=config.task, batch_size=40), verbose=0, return_dict=True)
    assert logs["classification_accuracy"] == pytest.approx(result.history["val_classification_accuracy"][-1], abs=1e-6)
    assert logs["bounding_box_mean_iou"] == pytest.approx(result.history["val_bounding_box_mean_iou"][-1], abs=1e-5)


def test_backup_from_other_config_is_refused(digits, tmp_path):
    train(TrainConfig(epochs=1, steps_per_epoch=2, **SMALL), digits, backup_dir=str(tmp_path), verbose=0)
    with pytest.raises(BackupError, match=r"another config \(differs in steps_per_epoch\)"):
        train(TrainConfig(epochs=1, steps_per_epoch=3, **SMALL), digits, backup_dir=str(tmp_path), verbose=0)


@pytest.mark.slow
def test_mirrored_strategy_over_two_cpu_devices_takes_the_single_device_steps(mnist_dir):
    # Two replicas that each see half of every batch must take the same steps as one device that
    # sees all of it (gradients averaged over the global batch): same weights up to float
    # reassociation, far smaller than how far the steps moved them. Logical devices must be
    # configured before TensorFlow starts: a fresh process.
    script = textwrap.dedent(f"""
        import json, keras, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from mnist_loc.config import TrainConfig
        from mnist_loc.model import build_model
        from mnist_loc.data import Digits
        from mnist_loc.training import train
        # float32: with a bfloat16 trunk (the default where the CPU has it) half-batch and full-batch
        # gradients round apart by about a fifth of the steps, which says nothing about the averaging.
        config = TrainConfig(epochs=1, steps_per_epoch=4, validation_canvases=500, mixed_precision=False)
        digits = Digits.find(data_dir={mnist_dir!r})
        one = train(config, digits, verbose=0)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        two = train(config, digits, strategy=strategy, verbose=0)
        keras.utils.set_random_seed(config.seed)
        start = build_model().get_weights()  # what train() starts from
        gap = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(a, b))
        print(json.dumps({{"replicas": strategy.num_replicas_in_sync, "apart": gap(one.model.get_weights(), two.model.get_weights()),
                          "moved": gap(one.model.get_weights(), start), "loss": [one.history["loss"], two.history["loss"]]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=600, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print("mirrored:", result)
    assert result["replicas"] == 2
    assert result["moved"] > 1e-3, "four steps moved the weights"
    assert result["apart"] < 1e-3 * result["moved"], "two replicas took the single device's steps"
    assert result["loss"][1] == pytest.approx(result["loss"][0], rel=1e-5)


def test_recipe_for_a_task_is_chosen_by_name_not_guessed():
    from mnist_loc.task import TASKS

    assert TrainConfig.for_task() == TrainConfig() == TrainConfig.for_task("course")
    sized = TrainConfig.for_task("sized-cluttered")
    assert sized.task == TASKS["sized-cluttered"]
    assert (sized.epochs, sized.learning_rate, sized.box_loss_weight, sized.ema_momentum) == (20, 5e-3, 1.0, 0.999)
    own = TASKS["sized"].replace(clutter=2)  # a task of your own: no name, so the defaults...
    assert TrainConfig.for_task(own).epochs == TrainConfig().epochs
    assert TrainConfig.for_task(own, recipe="sized").epochs == 20  # ...unless a recipe is named
    assert TrainConfig.for_task("sized", epochs=3).epochs == 3, "overrides win over the recipe"
    with pytest.raises(ValueError, match="unknown recipe"):
        TrainConfig.for_task(own, recipe="huge")
    with pytest.raises(ValueError, match="unknown task 'cluttered'"):
        TrainConfig(task="cluttered")
    assert TrainConfig.lab(task="cluttered-60").task.canvas_size == 60


def test_config_round_trips_through_json_and_names_its_recipe():
    config = TrainConfig.for_task("cluttered-100", epochs=1, seed=3)
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.task.name == "cluttered-100"
    assert config.recipe_label() == "default (epochs=1)"
    assert dataclasses.replace(config, validation_canvases=500, steps_per_execution=1).recipe_label() == "default (epochs=1)", "speed only"
    assert TrainConfig.lab(task="sized", seed=2).recipe_label() == "lab"
    assert TrainConfig.for_task("sized").recipe_label() == "default"
