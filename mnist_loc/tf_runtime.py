"""How this process runs TensorFlow: quietly, and within its memory.

Quietly: TensorFlow writes start-up lines (oneDNN, CUDA probing) before its log level is read,
and some later lines (a tf.data buffer size on the first tfrecord read, oneDNN's int64
fallback at a detector's first step) whatever ``TF_CPP_MIN_LOG_LEVEL`` says; they are
dropped, Python's own messages still show. Within its memory: glibc gives each thread that
allocates its own malloc arena, and TensorFlow's thread pools keep hundreds of MB of freed
memory there (:func:`cap_malloc_arenas`). Both the command line and notebooks use these
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


MALLOC_ARENAS = 1  # glibc's default is 8 per core; each arena keeps what its threads freed
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads started after this call, as
    ``MALLOC_ARENA_MAX`` does for a whole process; unless ``MALLOC_ARENA_MAX`` is set (the
    user's choice stands). True if the cap was set; False where the C library is not glibc.
    Measured by ``benchmarks/memory.py`` (docs/testbed.md, "Memory by phase")."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):
        return False


def import_tensorflow_quietly() -> None:
    """Import TensorFlow without its C++ start-up lines on the terminal, its threads sharing
    :data:`MALLOC_ARENAS` malloc arenas (:func:`cap_malloc_arenas`).

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user chose a level (the runtime's own
    errors still reach Python as exceptions), then imports TensorFlow and probes its
    devices with those lines filtered out. Call it before importing mnist_loc's
    TensorFlow modules: the command line does, and so do the notebooks.
    """
    if "tensorflow" not in sys.modules:  # before TensorFlow starts its threads
        cap_malloc_arenas()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with cpp_logs_filtered():
        import tensorflow

        tensorflow.config.list_physical_devices()  # the CUDA probe logs on first device use
