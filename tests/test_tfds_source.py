"""Finding MNIST, downloading it once, and failing fast offline, all without the internet.

tfds' real download-and-prepare path runs against a local HTTP server on 127.0.0.1 that
serves small, valid MNIST IDX files; the MNIST builder is pointed at it as tfds' own
mnist_test.py does (its URL and example counts are class/module attributes).
"""

import gzip
import http.server
import os
import socket
import struct
import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mnist_loc import tfds_source
from mnist_loc.data import Digits, make_dataset
from mnist_loc.tfds_source import DataNotFoundError

TRAIN, TEST = 24, 12  # fake examples per tfds split
FILES = {
    "train-images-idx3-ubyte.gz": ("images", TRAIN, 0),
    "train-labels-idx1-ubyte.gz": ("labels", TRAIN, 0),
    "t10k-images-idx3-ubyte.gz": ("images", TEST, 100),
    "t10k-labels-idx1-ubyte.gz": ("labels", TEST, 100),
}


def fake_digit(index):
    """A 28x28 digit whose ink value tells which example it is: 10x10 block of value index + 1."""
    digit = np.zeros((28, 28), np.uint8)
    digit[9:19, 9:19] = index + 1
    return digit


def write_idx_files(folder):
    for name, (kind, count, first) in FILES.items():
        if kind == "images":
            body = struct.pack(">IIII", 2051, count, 28, 28) + np.stack([fake_digit(first + i) for i in range(count)]).tobytes()
        else:
            body = struct.pack(">II", 2049, count) + bytes((first + i) % 10 for i in range(count))
        with gzip.open(folder / name, "wb") as f:
            f.write(body)


class Server:
    """A local file server that counts the requests it answers; ``missing`` files get 404."""

    def __init__(self, folder, missing=()):
        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def send_head(self):
                requests.append((self.command, self.path))
                if self.path.lstrip("/") in missing:
                    self.send_error(404)
                    return None
                return super().send_head()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def downloads(self):
        return [path for command, path in self.requests if command == "GET"]


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """No TFDS_DATA_DIR, an empty home, no proxy for 127.0.0.1; returns an empty data dir."""
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return tmp_path / "tfds"


@pytest.fixture
def mnist_source(tmp_path, monkeypatch):
    """Point tfds' MNIST builder at a local folder of fake IDX files; monkeypatch restores it."""
    import tensorflow_datasets as tfds

    builder_cls = tfds.builder_cls("mnist")
    module = __import__(builder_cls.__module__, fromlist=["_TRAIN_EXAMPLES"])
    monkeypatch.setattr(module, "_TRAIN_EXAMPLES", TRAIN)
    monkeypatch.setattr(module, "_TEST_EXAMPLES", TEST)
    files = tmp_path / "served"
    files.mkdir()
    write_idx_files(files)

    def serve(url_of_server):
        monkeypatch.setattr(builder_cls, "URL", url_of_server)

    return files, serve


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tfds_source.search_dirs(tmp_path / "arg") == [str(tmp_path / "arg"), str(tmp_path / "env"), str(tmp_path / "home" / "tensorflow_datasets")]
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert tfds_source.search_dirs() == [str(tmp_path / "home" / "tensorflow_datasets")]


def test_first_run_downloads_and_prepares_later_runs_do_not(offline_home, mnist_source, capfd):
    files, serve = mnist_source
    with Server(files) as server:
        serve(server.url)
        x, targets = next(iter(make_dataset("test", Digits.find(data_dir=str(offline_home)), batch_size=TEST)))
        assert sorted(server.downloads()) == sorted("/" + name for name in FILES)
        assert tfds_source.is_prepared("mnist", str(offline_home))
        # The canvases hold the served digits (tfds shuffles their order): served test example i
        # has ink value 101 + i and label i % 10.
        assert x.shape == (TEST, 75, 75, 1)
        ink = np.round(x.numpy().reshape(TEST, -1).max(-1) * 255).astype(int)
        assert sorted(ink) == list(range(101, 101 + TEST))
        np.testing.assert_array_equal(targets["classification"].numpy().argmax(-1), (ink - 101) % 10)
        err = capfd.readouterr().err
        assert f"mnist_loc: downloading mnist once (about 11 MiB) from {server.url}" in err and str(offline_home) in err

        requests_after_first = len(server.requests)
        images, labels = Digits.find(data_dir=str(offline_home)).split("train")  # a later run
        assert len(server.requests) == requests_after_first, "a prepared dataset must not touch the network"
        assert images.shape == (TRAIN - TRAIN // 12, 28, 28, 1)  # the last twelfth is validation
        assert "downloading" not in capfd.readouterr().err


def test_download_goes_into_the_first_folder_searched(offline_home, mnist_source, monkeypatch, tmp_path):
    files, serve = mnist_source
    env_dir = tmp_path / "env_tfds"
    monkeypatch.setenv("TFDS_DATA_DIR", str(env_dir))
    with Server(files) as server:
        serve(server.url)
        Digits.find()  # no data_dir: $TFDS_DATA_DIR is the first folder
    assert tfds_source.is_prepared("mnist", str(env_dir))
    assert not (tmp_path / "home").exists()


def test_no_download_refuses_without_touching_the_server(offline_home, mnist_source):
    files, serve = mnist_source
    with Server(files) as server:
        serve(server.url)
        with pytest.raises(DataNotFoundError, match=r"not prepared in .*download=False / --no-download.*TFDS_DATA_DIR"):
            Digits.find(data_dir=str(offline_home), download=False)
        assert server.requests == []


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there once the socket is closed


def test_unreachable_source_fails_fast_and_leaves_nothing(offline_home, mnist_source):
    _, serve = mnist_source
    url = closed_port_url()
    serve(url)
    start = time.monotonic()
    with pytest.raises(DataNotFoundError) as caught:
        Digits.find(data_dir=str(offline_home))
    assert time.monotonic() - start < 30
    message = str(caught.value)
    for words in (f"cannot download mnist from {url}", "network is unreachable", "TFDS_DATA_DIR", "--data-dir", "machine with internet"):
        assert words in message
    assert not offline_home.exists(), "a failed download must leave nothing behind"


def test_download_failing_midway_leaves_nothing_a_later_run_could_use(offline_home, mnist_source):
    files, serve = mnist_source
    with Server(files, missing={"t10k-labels-idx1-ubyte.gz"}) as server:
        serve(server.url)
        with pytest.raises(DataNotFoundError, match="failed .*nothing was kept"):
            Digits.find(data_dir=str(offline_home))
        assert len(server.downloads()) >= 2, "the download really started"
    assert not offline_home.exists() or os.listdir(offline_home) == []
    assert not tfds_source.is_prepared("mnist", str(offline_home))
    with pytest.raises(DataNotFoundError, match="not prepared"):
        Digits.find(data_dir=str(offline_home), download=False)


def test_unreachable_probe_gives_up_by_its_deadline(monkeypatch):
    # A DNS look-up can hang past any socket timeout: the probe must return on time anyway.
    import urllib.request

    def hangs(*args, **kwargs):
        time.sleep(5)
        raise OSError("answered too late")

    monkeypatch.setattr(urllib.request, "urlopen", hangs)
    start = time.monotonic()
    assert tfds_source._unreachable("http://example.invalid/", timeout=0.5) == "no answer within 0.5 s"
    assert time.monotonic() - start < 2


# --- any tfds dataset of 28x28x1 uint8 images with class labels ---

GLYPHS = ("ring", "bar", "cross")


def glyph(label, index):
    image = np.zeros((28, 28, 1), np.uint8)
    if label == 0:
        image[6:22, 6:22] = 200
        image[9:19, 9:19] = 0
    elif label == 1:
        image[4:24, 13:15] = 255
    else:
        image[13:15, 4:24] = image[4:24, 13:15] = 255
    image[0, 0] = index  # every example differs
    return image


class TinyGlyphs(tfds.core.GeneratorBasedBuilder):
    """A 3-class dataset in tfds format (24 train, 12 test), not MNIST: proves the generality."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(names=list(GLYPHS)),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(24, 0), "test": self._generate_examples(12, 100)}

    def _generate_examples(self, count, first):
        for i in range(count):
            yield first + i, {"image": glyph((first + i) % 3, first + i), "label": (first + i) % 3}


def tiny_glyphs_builder(folder):
    builder = TinyGlyphs(data_dir=str(folder))
    builder.download_and_prepare()
    return builder


def test_another_tfds_dataset_sizes_the_task_and_the_model(tmp_path, monkeypatch):
    from mnist_loc.config import TrainConfig
    from mnist_loc.task import Task
    from mnist_loc.training import train

    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    builder = tiny_glyphs_builder(tmp_path)
    name = builder.name
    assert name == "tiny_glyphs"
    digits = Digits.find(Task(dataset=name), str(tmp_path), download=False)
    assert digits.class_names == GLYPHS
    sizes = {split: len(digits.split(split)[0]) for split in ("train", "validation", "test")}
    assert sizes == {"train": 22, "validation": 2, "test": 12}, "validation is the last twelfth of train"
    x, targets = next(iter(make_dataset("test", digits, task=Task(dataset=name, scale=(0.5, 2.0), box="ink", clutter=2), batch_size=12)))
    assert x.shape == (12, 75, 75, 1) and targets["classification"].shape == (12, 3)
    result = train(TrainConfig(task=Task(dataset=name), epochs=1, steps_per_epoch=2, batch_size=8, validation_batch_size=2), digits, verbose=0)
    assert result.model.output["classification"].shape[-1] == 3


def test_a_dataset_that_is_not_28x28_gray_is_refused(monkeypatch, tmp_path):
    builder_cls = tfds.builder_cls("mnist")
    info = builder_cls(data_dir=str(tmp_path)).info
    monkeypatch.setattr(info.features["image"], "_shape", (32, 32, 3), raising=False)
    monkeypatch.setattr(tfds_source, "prepared_dir", lambda *a, **k: str(tmp_path))
    monkeypatch.setattr(tfds_source, "_builder", lambda name, folder: type("B", (), {"info": info})())
    with pytest.raises(ValueError, match=r"needs uint8 \[28, 28, 1\]"):
        tfds_source.read_splits("cifar_like", data_dir=str(tmp_path))
