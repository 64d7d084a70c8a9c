"""Faults a real user hits, injected for real: a second process, a truncated file, a signal,
a full disk, an oversized image header, a hostile model file. Each ends in one clear line."""

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib

import numpy as np
import pytest

from conftest import ROOT, fake_digits
from mnist_loc import safe_writes as files
from mnist_loc.config import TrainConfig
from mnist_loc.task import Task

SMALL = dict(task=Task(canvas_size=32), batch_size=16, validation_canvases=40)

CLI = [sys.executable, "-m", "mnist_loc"]


def cli_env():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "PYTHONPATH": str(ROOT)}


def run_cli(*args, timeout=600):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=cli_env())


def snapshot(folder):
    """Every file under ``folder`` with its size and mtime: 'touches nothing' means this is unchanged."""
    return {
        os.path.relpath(os.path.join(d, n), folder): (os.stat(os.path.join(d, n)).st_size, os.stat(os.path.join(d, n)).st_mtime_ns)
        for d, _, names in os.walk(folder) for n in names
    }


def temporary_files(folder):
    return [n for _, _, names in os.walk(folder) for n in names if ".tmp" in n]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def epochs_in_backup(backup):
    try:
        return json.loads((backup / "state.json").read_text())["epochs_done"]
    except (OSError, ValueError):
        return 0


# --- one run per output folder ---

def test_output_lock_refuses_a_second_holder_and_names_it(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(ROOT)!r})
            from mnist_loc.safe_writes import output_lock
            with output_lock({str(tmp_path)!r}):
                print("held", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(tmp_path)
        with pytest.raises(files.FolderInUse, match=rf"{tmp_path} is in use by another run \(pid {holder.pid} on "):
            with files.output_lock(tmp_path):
                pass
        assert snapshot(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()
    # Killed without a chance to clean up: its lock file is still there, but its lock is not.
    assert (tmp_path / files.LOCK_FILE).exists()
    with files.output_lock(tmp_path):
        with files.output_lock(tmp_path):  # re-entrant within one process
            assert json.loads((tmp_path / files.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / files.LOCK_FILE).exists()
    # A folder the lock created goes again if nothing was written into it; one with files stays.
    with files.output_lock(tmp_path / "new"):
        pass
    with files.output_lock(tmp_path / "used"):
        files.write_json(tmp_path / "used" / "metrics.json", {})
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path / "used") == ["metrics.json"]


def test_run_into_a_folder_another_process_holds_is_refused(tmp_path):
    """The notebook's case: two kernels training into the same OUT_DIR."""
    from mnist_loc.experiment import run

    backup = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from mnist_loc.safe_writes import output_lock\n"
         f"with output_lock({str(backup)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(files.FolderInUse, match=rf"^{backup} is in use by another run \(pid {holder.pid} "):
            run(TrainConfig(epochs=1, steps_per_epoch=1, **SMALL), out_dir=backup, digits=fake_digits(), callbacks=[])
    finally:
        holder.kill()
        holder.wait()
    assert sorted(os.listdir(backup)) == [files.LOCK_FILE]  # the holder's lock file only: nothing written


@pytest.mark.slow
def test_second_train_on_the_same_out_is_refused_and_the_first_finishes(mnist_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--epochs", 2, "--steps-per-epoch", 40, "--validation-canvases", 500, "--data-dir", mnist_dir, "--out", out]
    first = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=cli_env())
    try:
        wait_for(lambda: (out / files.LOCK_FILE).exists(), 60, "the first run's lock")
        before = snapshot(out)
        start = time.monotonic()
        second = run_cli(*args, timeout=120)
        assert time.monotonic() - start < 30
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"mnist_loc: error: {out} is in use by another run (pid {first.pid} on {os.uname().nodename}, "
            f"`python -m mnist_loc {' '.join(map(str, args))}`, since {json.loads((out / files.LOCK_FILE).read_text())['started']}); "
            "wait for it to end or choose another output folder"
        ]
        assert second.stdout == ""
        changed = {k for k in set(before) | set(snapshot(out)) if before.get(k) != snapshot(out).get(k)}
        assert not any(k.startswith(files.LOCK_FILE) for k in changed)
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert err == ""
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["epochs"] == 2 and len(metrics["config"]) > 5
    assert sorted(os.listdir(out)) == ["history.csv", "metrics.json", "model.keras", "predictions.png", "task.json"]


# --- corrupt or unreadable backups ---

def _interrupted_backup(digits, backup, config):
    """A backup as a killed run leaves it: one finished epoch of ``config``."""
    import keras

    from mnist_loc.training import train

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    train(config, digits, backup_dir=str(backup), verbose=0, callbacks=[StopAfterFirstEpoch()])
    assert epochs_in_backup(backup) == 1


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize("damage, reason", [
    ("truncated_state", r"is unreadable \(JSONDecodeError: Expecting property name"),
    ("missing_weights", r"is unreadable \(epoch-0001.npz: FileNotFoundError"),
    ("truncated_weights", r"is unreadable \(epoch-0001.npz: "),
    ("state_of_another_version", r"was made with another config \(differs in ema_momentum, label_smoothing\)"),
])
def test_damaged_backup_is_one_clear_error(tmp_path, damage, reason):
    from mnist_loc.training import BackupError, train

    config = TrainConfig(epochs=2, steps_per_epoch=2, **SMALL)
    digits = fake_digits()
    backup = tmp_path / "backup"
    _interrupted_backup(digits, backup, config)
    weights = backup / "epoch-0001.npz"
    if damage == "truncated_state":
        _truncate(backup / "state.json", 40)
    elif damage == "missing_weights":
        weights.unlink()
    elif damage == "truncated_weights":
        _truncate(weights, weights.stat().st_size // 2)
    else:  # a backup written before the config had these two fields
        state = json.loads((backup / "state.json").read_text())
        del state["config"]["ema_momentum"], state["config"]["label_smoothing"]
        (backup / "state.json").write_text(json.dumps(state))
    with pytest.raises(BackupError, match=rf"^the backup in {backup} {reason}.*; --restart \(or deleting the folder\) starts over"):
        train(config, digits, backup_dir=str(backup), verbose=0)
    assert "\n" not in str(pytest.raises(BackupError, train, config, digits, backup_dir=str(backup), verbose=0).value)


@pytest.mark.slow
def test_truncated_backup_on_the_command_line_then_restart(mnist_dir, mnist_digits, tmp_path):
    out = tmp_path / "run"
    _interrupted_backup(mnist_digits, out / "backup", TrainConfig(epochs=2, steps_per_epoch=5, validation_canvases=500))
    _truncate(out / "backup" / "state.json", 19)
    args = ["train", "--epochs", 2, "--steps-per-epoch", 5, "--validation-canvases", 500, "--data-dir", mnist_dir, "--out", out]
    refused = run_cli(*args)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"mnist_loc: error: the backup in {out / 'backup'} is unreadable (JSONDecodeError: Expecting property name enclosed in "
        "double quotes: line 3 column 4 (char 19)); --restart (or deleting the folder) starts over"
    ]
    restarted = run_cli(*args, "--restart")
    assert restarted.returncode == 0, restarted.stderr
    assert "resumed" not in restarted.stdout
    assert (out / "metrics.json").exists() and not (out / "backup").exists()


# --- SIGTERM and SIGINT ---

@pytest.mark.slow
@pytest.mark.parametrize("signum, status, said", [(signal.SIGTERM, 143, "stopped by SIGTERM"), (signal.SIGINT, 130, "interrupted")])
def test_signal_stops_promptly_keeps_the_backup_and_says_how_to_resume(mnist_dir, tmp_path, signum, status, said):
    out = tmp_path / "run"
    args = ["train", "--epochs", 3, "--steps-per-epoch", 30, "--validation-canvases", 500, "--data-dir", mnist_dir, "--out", out]
    proc = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=cli_env())
    try:
        wait_for(lambda: epochs_in_backup(out / "backup") >= 1, 120, "the first epoch's backup")
        proc.send_signal(signum)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=60)
        stopped_after = time.monotonic() - sent
    finally:
        proc.kill()
    assert stopped_after <= 10
    assert proc.returncode == status
    done = epochs_in_backup(out / "backup")
    assert 1 <= done < 3
    assert err.splitlines()[-1] == f"mnist_loc: {said}; {out / 'backup'} keeps epoch {done}: rerun the same command to resume"
    assert len(err.splitlines()) == 1
    assert sorted(os.listdir(out / "backup")) == [f"epoch-{done:04d}.npz", "state.json"]
    assert temporary_files(out) == [] and not (out / files.LOCK_FILE).exists()
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed after epoch {done} from {out / 'backup'}" in resumed.stdout


# --- disk full, write errors ---

H5PY_ENOSPC = (
    "Unable to synchronously create file (file write failed: time = Fri Nov 27 10:00:00 2026\n, filename = '{path}', "
    "file descriptor = 5, errno = 28, error message = 'No space left on device', buf = 0x5581d6a0b0a0, total write size = 2048, "
    "bytes this sub-write = 2048, bytes actually written = 18446744073709551615, offset = 0)"
)


def test_write_error_is_one_line_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    files.write_json(target, {"accuracy": 0.99})
    real_fsync = os.fsync

    def disk_full(fd):  # the data reaches the disk at fsync: that is where a full disk says so
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(files.WriteError) as error:
        files.write_json(target, {"accuracy": 0.5})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert str(error.value) == f"cannot write {target}: No space left on device"
    assert json.loads(target.read_text()) == {"accuracy": 0.99}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_disk_full_while_saving_the_backup_keeps_the_last_epoch(tmp_path, monkeypatch):
    from mnist_loc.model import build_model, compile_model
    from mnist_loc.training import _save_backup

    model = compile_model(build_model())
    _save_backup(str(tmp_path), model, TrainConfig(), 1, {"loss": [1.0]}, (1.0, 1.0))
    before = snapshot(tmp_path)
    real_fsync = os.fsync

    def disk_full(fd):  # the archive's bytes were written; the disk says it is full when they are flushed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(files.WriteError) as error:
        _save_backup(str(tmp_path), model, TrainConfig(), 2, {"loss": [1.0, 0.5]}, (2.0, 2.0))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert str(error.value) == f"cannot write {tmp_path / 'epoch-0002.npz'}: No space left on device"
    assert snapshot(tmp_path) == before  # epoch 1's backup as it was, no partial file


def test_h5py_style_disk_full_message_becomes_one_line(tmp_path):
    target = tmp_path / "model.weights.h5"
    with pytest.raises(files.WriteError) as error:
        with files.atomic_path(target) as tmp:
            open(tmp, "wb").write(b"\x89HDF\r\n\x1a\n")
            raise OSError(H5PY_ENOSPC.format(path=tmp))  # h5py's multi-line report of a full disk
    assert str(error.value) == f"cannot write {target}: No space left on device"
    assert os.listdir(tmp_path) == []


def _can_mount_tmpfs(path):
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "mnist_loc_test", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A real 400 KB file system: writes beyond it fail with ENOSPC. Skipped where mounting is not allowed."""
    disk = tmp_path / "small_disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (needs root); the patched-writer tests above still run")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_real_full_disk_during_training_is_one_line(mnist_dir, small_disk):
    out = small_disk / "run"
    result = run_cli("train", "--epochs", 1, "--steps-per-epoch", 3, "--validation-canvases", 500, "--data-dir", mnist_dir, "--out", out)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"mnist_loc: error: cannot write {out / 'backup' / 'epoch-0001.npz'}: No space left on device"
    ]
    assert temporary_files(small_disk) == [] and not (out / "backup" / "state.json").exists()


def test_real_full_disk_while_saving_a_run(small_disk):
    import matplotlib.pyplot as plt

    from mnist_loc import artifacts
    from mnist_loc.model import build_model

    files.write_json(small_disk / "metrics.json", {"accuracy": 0.99})  # an earlier run's complete file
    figure = plt.figure()
    with pytest.raises(files.WriteError, match=rf"^cannot write {small_disk / 'model.keras'}: No space left on device$"):
        artifacts.save_run(small_disk, build_model(), {"accuracy": 0.5}, {"loss": [1.0]}, {}, figure=figure)
    assert json.loads((small_disk / "metrics.json").read_text()) == {"accuracy": 0.99}
    assert sorted(os.listdir(small_disk)) == ["metrics.json"]
    plt.close(figure)


# --- images are checked before they are decoded ---

def _png_header(width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.mark.parametrize("name, content, message", [
    ("huge.png", _png_header(15000, 15000) + b"\0" * 2000, "image is 15000x15000, larger than the model's 75x75 canvas"),
    ("wide.png", _png_header(76, 10), "image is 10x76, larger than the model's 75x75 canvas"),
    ("fake.png", b"GIF89a" + b"\0" * 40, "not a PNG file"),
])
def test_png_size_is_read_from_the_header(tmp_path, monkeypatch, name, content, message):
    import matplotlib.image

    from mnist_loc.cli import read_image

    path = tmp_path / name
    path.write_bytes(content)
    monkeypatch.setattr(matplotlib.image, "imread", lambda *a, **k: pytest.fail("decoded before the size check"))
    with pytest.raises(ValueError, match=message):
        read_image(str(path), 75)


def test_huge_npy_is_refused_from_its_header(tmp_path, monkeypatch):
    from mnist_loc.cli import image_shape, read_image

    path = tmp_path / "huge.npy"
    header = np.lib.format  # a 2 GB array declared in the header; the file holds only the header
    with open(path, "wb") as f:
        header.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (23170, 23170)})
    assert image_shape(str(path)) == (23170, 23170)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("loaded before the size check"))
    with pytest.raises(ValueError, match="image is 23170x23170, larger than the model's 75x75 canvas"):
        read_image(str(path), 75)


def _predict_peak_mb(model, image):
    """Run ``predict`` in a fresh process; return (exit status, stderr lines, peak RSS in MB).

    Peak RSS from /proc's VmHWM, which starts afresh at exec (getrusage's ru_maxrss can
    carry over the forking parent's)."""
    script = (f"import sys; from mnist_loc.cli import main; code = main(['predict', '--model', {str(model)!r}, {str(image)!r}]); "
              "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1], file=sys.stderr); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=120)
    lines = result.stderr.splitlines()
    return result.returncode, lines[:-1], int(lines[-1]) / 1024


@pytest.mark.slow
def test_predict_on_a_huge_png_is_refused_with_normal_memory(tmp_path):
    from mnist_loc.model import build_model

    model = tmp_path / "model.keras"
    build_model().save(model)
    png = tmp_path / "bomb.png"
    rows = zlib.compress(b"\0" * (15000 + 1) * 15000, 9)  # a valid 15000x15000 gray PNG of 214 KB
    png.write_bytes(_png_header(15000, 15000) + struct.pack(">I", len(rows)) + b"IDAT" + rows
                    + struct.pack(">I", zlib.crc32(b"IDAT" + rows)) + b"\0\0\0\0IEND\xaeB`\x82")
    del rows
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((28, 28), np.float32))
    status, lines, bomb_mb = _predict_peak_mb(model, png)
    assert status == 1
    assert lines == [f"mnist_loc: error: {png}: image is 15000x15000, larger than the model's 75x75 canvas"]
    status, _, normal_mb = _predict_peak_mb(model, small)
    assert status == 0
    assert bomb_mb < normal_mb + 100  # decoding it would add 225 MB as bytes, 900 MB as floats


# --- hostile model files ---

def _hostile_model(tmp_path, name, edit):
    from mnist_loc.model import build_model

    good = tmp_path / "good.keras"
    build_model().save(good)
    with zipfile.ZipFile(good) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config["config"]["layers"][1])
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, json.dumps(config) if member == "config.json" else data)
    return path


def _as_activation(module, function):
    def edit(layer):
        layer["config"]["activation"] = {"module": module, "class_name": "function", "config": function, "registered_name": "function"}
    return edit


def _as_layer(module, class_name, config):
    def edit(layer):
        layer.update(module=module, class_name=class_name, registered_name=None, config=config)
    return edit


@pytest.mark.parametrize("case", ["os.system activation", "builtins.eval activation", "subprocess.Popen layer", "os.system layer"])
def test_hostile_model_files_are_refused_and_nothing_runs(tmp_path, case):
    import keras

    from mnist_loc.artifacts import ModelFileError, load_model

    sentinel = tmp_path / "ran"
    edit = {
        "os.system activation": _as_activation("os", "system"),
        "builtins.eval activation": _as_activation("builtins", "eval"),
        "subprocess.Popen layer": _as_layer("subprocess", "Popen", {"args": ["touch", str(sentinel)]}),
        "os.system layer": _as_layer("os", "system", {"command": f"touch {sentinel}"}),
    }[case]
    path = _hostile_model(tmp_path, case.replace(" ", "_") + ".keras", edit)
    name = case.split()[0]
    with pytest.raises(ModelFileError, match=rf"refused to load .*: its config names {name}, which is neither Keras nor mnist_loc"):
        load_model(path)
    # Keras' own safe mode refuses it too: pinned, so an upgrade that loosens it fails here.
    with pytest.raises(Exception) as refused:
        keras.saving.load_model(path, safe_mode=True)
    assert not isinstance(refused.value, AssertionError)
    time.sleep(0.2)  # a spawned `touch` would have run by now
    assert not sentinel.exists()
