"""How this process runs TensorFlow: quietly, and within its memory.

Quietly: TensorFlow writes start-up lines (oneDNN, CUDA probing) before its log level is read,
and some later lines (a tf.data buffer size on the first tfrecord read, oneDNN's int64
fallback at a detector's first step) whatever ``TF_CPP_MIN_LOG_LEVEL`` says; they are
dropped, Python's own messages still show. Within its memory: glibc gives each thread that
allocates its own malloc arena and keeps blocks of up to 32 MiB in its heap once freed, so
TensorFlow's thread pools hold hundreds of MB of freed memory (:func:`tune_malloc`). Both the command line and notebooks use these
helpers, so they live below both. Pure Python: importing this module does not load TensorFlow.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import threading

# "I0000 00:00:1795732122.447 3136 port.cc:153] ..." (absl's format), "2026-12-01
# 13:25:33.166526: E external/local_xla/.../cuda_platform.cc:51] failed call to cuInit ..."
# (TensorFlow's own format, which TF 2.20 uses for that line on a machine without a GPU
# even at TF_CPP_MIN_LOG_LEVEL=2) and absl's pre-init banner.
_CPP_LOG_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-]+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] [\w.\-/]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"  # cpu_feature_guard's 2nd line
)


@contextlib.contextmanager
def cpp_logs_filtered():
    """Within the block, drop the lines TensorFlow's C++ runtime writes to file descriptor 2.

    Every other line written to stderr in the block (Python warnings, tracebacks of errors
    caught inside) goes on to stderr as it comes, in order: file descriptor 2 is a pipe
    read by a thread, so a whole training run can sit inside (TensorFlow logs some lines,
    such as oneDNN's fallback on CPUs without AVX-512, at its first step, not at import).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    _real_stderr.append(saved)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not _CPP_LOG_LINE.match(line):
                    os.write(saved, line)

    reader = threading.Thread(target=forward, name="mnist_loc-stderr", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last writer: the reader sees its end
        reader.join(timeout=10)
        _real_stderr.remove(saved)
        os.close(saved)


_real_stderr: list = []  # the stderr each cpp_logs_filtered block replaced, innermost last


def write_to_real_stderr(text: str) -> None:
    """Write ``text`` to the terminal's stderr at once, past any :func:`cpp_logs_filtered`
    block's pipe: for a last line before ``os._exit``, which would not wait for the pipe."""
    os.write(_real_stderr[0] if _real_stderr else 2, text.encode())


@contextlib.contextmanager
def absl_warnings_hidden():
    """Hide absl's Python warnings in the block, e.g. tfds' "Variant folder … has no
    dataset_info.json" about a dataset folder that simply is not there yet."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


MALLOC_ARENAS = 2  # glibc's default is 8 per core; each thread pool's arena keeps what it freed
# Blocks from 1 MiB up get their own mapping, returned when freed. glibc's default threshold rises
# to the largest block freed (up to 32 MiB), after which a batch's tensors stay in the heap.
MMAP_THRESHOLD = 2**20
_MALLOPT = {"MALLOC_ARENA_MAX": -8, "MALLOC_MMAP_THRESHOLD_": -3}  # mallopt's parameter numbers (glibc's malloc.h)


def tune_malloc(arenas: int = MALLOC_ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> dict:
    """Set glibc's malloc to return a run's freed tensors: at most ``arenas`` arenas for the threads
    started after this call and a fixed ``mmap_threshold`` in bytes, as the environment variables
    ``MALLOC_ARENA_MAX`` and ``MALLOC_MMAP_THRESHOLD_`` do for a whole process; a variable the user
    set stands. Returns ``{variable: True if set here}``, all False where the C library is not glibc.
    Measured by ``benchmarks/memory.py`` (docs/testbed.md, "Memory by phase")."""
    values = {"MALLOC_ARENA_MAX": arenas, "MALLOC_MMAP_THRESHOLD_": mmap_threshold}
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return dict.fromkeys(values, False)
    return {name: name not in os.environ and bool(mallopt(_MALLOPT[name], int(value))) for name, value in values.items()}


def import_tensorflow_quietly() -> None:
    """Import TensorFlow without its C++ start-up lines on the terminal, its threads sharing
    malloc tuned to return freed tensors (:func:`tune_malloc`).

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user chose a level (the runtime's own
    errors still reach Python as exceptions), then imports TensorFlow and probes its
    devices with those lines filtered out. Call it before importing mnist_loc's
    TensorFlow modules: the command line does, and so do the notebooks.
    """
    if "tensorflow" not in sys.modules:  # before TensorFlow starts its threads
        tune_malloc()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with cpp_logs_filtered():
        import tensorflow

        tensorflow.config.list_physical_devices()  # the CUDA probe logs on first device use
