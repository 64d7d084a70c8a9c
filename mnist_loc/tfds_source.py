"""Where the digits come from: a tensorflow-datasets dataset, found prepared or downloaded once,
read into memory and cut into a task's splits. It knows nothing of canvases or models.

Folders are searched in this order: ``data_dir=`` (``--data-dir``), ``$TFDS_DATA_DIR``,
``~/tensorflow_datasets``. The first that holds the dataset prepared is used and the
network is never touched. If none does, tensorflow-datasets downloads the original
files and prepares them in the first of those folders (its own progress bars show),
unless ``download=False``. Before that, one quick request checks that the source is
reachable: offline, tfds' downloader would retry for about 200 s before failing, while
this gives up in seconds with a message that says what to do.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import urllib.error
import urllib.request

import numpy as np

from .task import DIGIT_SIZE, MNIST_CLUTTERED_VALIDATION
from .tf_runtime import absl_warnings_hidden, cpp_logs_filtered

REACHABILITY_TIMEOUT = 15.0  # seconds for the pre-download check, DNS included
SPLITS = ("train", "validation", "test")
# splits="tfds": validation is the last twelfth of tfds' train split (MNIST: 5,000 of 60,000).
VALIDATION_FRACTION = 12


class DataNotFoundError(FileNotFoundError):
    """The dataset is not prepared in any searched folder and could not be downloaded."""


def search_dirs(data_dir=None) -> list[str]:
    """The folders searched for a prepared dataset, in order: ``data_dir``,
    ``$TFDS_DATA_DIR``, ``~/tensorflow_datasets`` (unset ones skipped, duplicates once)."""
    candidates = (data_dir, os.environ.get("TFDS_DATA_DIR"), "~/tensorflow_datasets")
    return list(dict.fromkeys(os.path.abspath(os.path.expanduser(os.fspath(f))) for f in candidates if f))


def _builder(name: str, folder: str):
    import tensorflow_datasets as tfds  # imported lazily: it takes seconds

    with absl_warnings_hidden():
        return tfds.builder(name, data_dir=folder)


def is_prepared(name: str, folder: str) -> bool:
    """Whether tfds dataset ``name`` is fully prepared in ``folder`` (no network)."""
    if not os.path.isdir(folder):
        return False
    with absl_warnings_hidden():
        return _builder(name, folder).is_prepared()


def prepared_dir(name: str = "mnist", data_dir=None, *, download: bool = True) -> str:
    """Return the folder in which tfds dataset ``name`` is prepared, downloading it if need be.

    Searches :func:`search_dirs`. If no folder holds ``name`` and ``download`` is true,
    checks that its source answers within ``REACHABILITY_TIMEOUT`` seconds, then lets
    tfds download and prepare it in the first folder searched. Raises
    :class:`DataNotFoundError` when ``download`` is false, when the source cannot be
    reached, or when the download fails; a failed download leaves nothing behind that
    a later run could take for a prepared dataset.
    """
    folders = search_dirs(data_dir)
    for folder in folders:
        if is_prepared(name, folder):
            return folder
    searched = ", ".join(folders)
    if not download:
        raise DataNotFoundError(
            f"{name} is not prepared in {searched} and downloading is off (download=False / "
            f"--no-download). Point TFDS_DATA_DIR (or data_dir= / --data-dir) at a tensorflow-datasets "
            f"folder that holds {name} prepared, e.g. `export TFDS_DATA_DIR=../shared/tensorflow_datasets`, "
            "or allow the download."
        )
    _download_and_prepare(name, folders[0])
    return folders[0]


def _download_and_prepare(name: str, folder: str) -> None:
    import tensorflow_datasets as tfds

    builder = _builder(name, folder)
    source = getattr(type(builder), "URL", None)  # the MNIST family's builders name their source
    sizes = [info.size for info in (type(builder).url_infos or {}).values()]
    size = f"about {sum(sizes) / 2**20:.0f} MiB" if sizes else "size unknown"
    print(f"mnist_loc: downloading {name} once ({size}) from {source or 'its source'} into {folder}", file=sys.stderr, flush=True)
    if source:
        problem = _unreachable(source, REACHABILITY_TIMEOUT)
        if problem:
            raise DataNotFoundError(
                f"cannot download {name} from {source}: the network is unreachable ({problem}). "
                f"Either point TFDS_DATA_DIR (or data_dir= / --data-dir) at a folder where {name} is "
                "already prepared, e.g. `export TFDS_DATA_DIR=../shared/tensorflow_datasets`, or run "
                f"once on a machine with internet, which prepares it in {folder}."
            )
    before = _entries(folder, name)
    try:
        # The builder's own URLs only (no tfds GCS mirror): the source checked above is the one used.
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    except BaseException as error:
        _remove_new_entries(folder, name, before)
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        message = " ".join(str(error).split())[:300]
        raise DataNotFoundError(
            f"downloading {name} from {source or 'its source'} into {folder} failed "
            f"({type(error).__name__}: {message}); nothing was kept. Try again, or point "
            "TFDS_DATA_DIR at a folder where it is prepared."
        ) from error


def _unreachable(url: str, timeout: float) -> str | None:
    """None if ``url``'s server answers (any HTTP status) within ``timeout`` seconds, else why not.

    Runs in a daemon thread so that a hanging DNS look-up, which no socket timeout
    covers, cannot hold the caller past ``timeout``.
    """
    outcome = {}

    def probe():
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout):
                pass
            outcome["problem"] = None
        except urllib.error.HTTPError:  # the server answered: the network is there
            outcome["problem"] = None
        except urllib.error.URLError as error:
            outcome["problem"] = str(error.reason)
        except Exception as error:  # timeouts, resets, anything else: never die unreported in a thread
            outcome["problem"] = f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome.get("problem", f"no answer within {timeout:g} s")


def _entries(folder: str, name: str) -> set[str]:
    """Paths tfds may create for ``name`` in ``folder`` that exist now."""
    roots = [folder, os.path.join(folder, name.split("/")[0]), os.path.join(folder, "downloads")]
    found = {root for root in roots if os.path.exists(root)}
    for root in roots:
        if os.path.isdir(root):
            found.update(os.path.join(root, entry) for entry in os.listdir(root))
    return found


def _remove_new_entries(folder: str, name: str, before: set[str]) -> None:
    """Delete what a failed download added (incomplete dataset, partial downloads), deepest first."""
    for path in sorted(_entries(folder, name) - before, key=len, reverse=True):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


def read_splits(dataset: str = "mnist", splits: str = "tfds", data_dir=None, *, download: bool = True):
    """Read a dataset's three splits into memory: ``(class_names, {split: (images, labels)})``,
    images uint8 ``[N, 28, 28, 1]``, labels int64 ``[N]``, in the split's order.

    ``splits`` as in :class:`~mnist_loc.task.Task`: ``"tfds"`` cuts the last twelfth of
    tfds' train split off for validation (MNIST: 55,000 / 5,000 / 10,000);
    ``"mnist-cluttered"`` restores MNIST's file order and cuts 50,000 / 10,000 / 10,000.
    Where the dataset is found: :func:`prepared_dir`. Raises :class:`DataNotFoundError`,
    or ValueError for a dataset that is not 28x28x1 uint8 with class labels.
    """
    import tensorflow_datasets as tfds  # imported lazily: it takes seconds

    folder = prepared_dir(dataset, data_dir, download=download)
    builder = _builder(dataset, folder)
    image, label = (builder.info.features[key] for key in builder.info.supervised_keys)
    if tuple(image.shape) != (DIGIT_SIZE, DIGIT_SIZE, 1) or image.np_dtype != np.uint8:
        raise ValueError(f"{dataset} has {image.np_dtype} images of shape {image.shape}; mnist_loc needs uint8 [28, 28, 1]")
    if not hasattr(label, "names") or label.num_classes < 2:
        raise ValueError(f"{dataset} has no class labels; mnist_loc needs an image-classification dataset")
    if set(builder.info.splits) < {"train", "test"}:
        raise ValueError(f"{dataset} needs a train and a test split, has {sorted(builder.info.splits)}")

    def read(split):
        with cpp_logs_filtered():  # the first tfrecord read logs a buffer size from C++
            return tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True, batch_size=-1))

    (train_images, train_labels), test = read("train"), read("test")
    num_train = len(train_labels)
    if splits == "mnist-cluttered":  # the files' order, cut as download_mnist.lua cuts it
        order = file_order("train", num_train)
        train_images, train_labels = train_images[order], train_labels[order]
        test = tuple(a[file_order("test", len(test[1]))] for a in test)
        first_validation = num_train - MNIST_CLUTTERED_VALIDATION
    else:
        first_validation = num_train - num_train // VALIDATION_FRACTION
    cut = {"train": slice(0, first_validation), "validation": slice(first_validation, None)}
    arrays = {name: (train_images[part], train_labels[part]) for name, part in cut.items()}
    return tuple(label.names), {**arrays, "test": test}


def file_order(tfds_split_name: str, num_examples: int) -> np.ndarray:
    """Where each example of the original files sits in tfds' records: int64 ``[N]``,
    ``positions[k]`` = tfds record of the file's example ``k``.

    tfds writes a split's records sorted by a salted md5 of each example's key (its own
    ``hashing.Hasher``, the split name as salt); MNIST's builder keys examples by their
    index in the file, so sorting the keys' hashes gives the record order back.
    """
    from tensorflow_datasets.core import hashing

    hasher = hashing.Hasher(tfds_split_name)
    hashes = [hasher.hash_key(k) for k in range(num_examples)]
    positions = np.empty(num_examples, np.int64)
    positions[sorted(range(num_examples), key=hashes.__getitem__)] = np.arange(num_examples)
    return positions
