"""Writing files safely: atomic writes with one-line errors, and one writer per output folder.

Free of TensorFlow, so the command line can claim its output folder before the slow imports.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time

from .tf_runtime import write_to_real_stderr


class WriteError(OSError):
    """A file could not be written (disk full, no permission, ...). The message is one
    line with the path and the operating system's reason; the old file, if any, is intact."""


def _os_reason(error: BaseException) -> str:
    """The operating system's reason behind a write failure, in a few words."""
    code = getattr(error, "errno", None)
    if not code:  # h5py folds the errno into a long message: "... errno = 28, error message = ..."
        found = re.search(r"errno = (\d+)", str(error))
        code = int(found.group(1)) if found else None
    if code:
        return os.strerror(code)
    return " ".join(str(error).split())[:200] or type(error).__name__


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    A crash, a signal or a failed write midway leaves the old file (or none), never a
    truncated one, and no temporary file. An ``OSError`` while writing (e.g. the disk
    is full) becomes a :class:`WriteError` naming ``path`` and the reason.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    tmp = None
    with _writing:  # exit_now() waits for a write in progress to finish
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=directory)
            os.close(fd)
            os.remove(tmp)  # let the writer create it
            yield tmp
            os.replace(tmp, path)
        except WriteError:
            raise
        except Exception as error:
            if isinstance(error, OSError) or re.search(r"errno = \d+", str(error)):
                raise WriteError(f"cannot write {path}: {_os_reason(error)}") from error
            raise
        finally:
            if tmp and os.path.exists(tmp):
                os.remove(tmp)


_writing = threading.RLock()


class FolderInUse(RuntimeError):
    """Another process is writing to the same output folder."""


LOCK_FILE = ".mnist_loc.lock"
_held_locks: dict = {}  # real path of a folder -> how many times this process holds it (re-entrant)
_created: set = set()  # held folders that the lock itself created


def exit_now(code: int, message) -> None:
    """End the process at once with ``message`` on stderr and exit status ``code``, from any
    thread: after any atomic write in progress has finished, with every output lock's file
    removed (a folder the lock created is removed too if the run left it empty). Files are
    then all complete; TensorFlow's slow interpreter teardown is skipped. ``message`` may be
    a callable, asked once the writes have finished (so it can describe what they left)."""
    _writing.acquire()  # held until exit: no write starts after this
    for folder in list(_held_locks):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, LOCK_FILE))
        if folder in _created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    write_to_real_stderr(f"{message() if callable(message) else message}\n")
    os._exit(code)


@contextlib.contextmanager
def output_lock(folder):
    """Hold ``folder`` for this process: a second process asking for it gets :class:`FolderInUse`.

    An advisory ``flock`` on ``folder/.mnist_loc.lock``, which names the holder (pid,
    host, command, start time). The kernel drops the lock when its process ends, however
    it ends, so a killed run never blocks the next one; a lock file left behind is just
    overwritten. Re-entrant within one process (the command line claims its ``--out``
    before the slow imports; ``run()`` then holds the same folder). The refused process
    creates and changes nothing; a folder the lock created is removed again if the run
    left it empty (a run that failed early leaves no empty ``--out`` behind).
    """
    key = os.path.realpath(os.fspath(folder))
    if key in _held_locks:
        _held_locks[key] += 1
        try:
            yield
        finally:
            _held_locks[key] -= 1
        return
    created = not os.path.isdir(key)
    path = os.path.join(key, LOCK_FILE)
    fd = _acquire(path, folder)
    _held_locks[key] = 1
    if created:
        _created.add(key)
    try:
        yield
    finally:
        del _held_locks[key]
        _created.discard(key)
        with contextlib.suppress(OSError):
            os.remove(path)  # before unlocking: a waiter that opened it re-checks the inode
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # not empty, or taken by another run: keep it
                os.rmdir(key)


def _acquire(path, folder) -> int:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as error:
        raise WriteError(f"cannot create {folder}: {_os_reason(error)}") from error
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WriteError(f"cannot write {path}: {_os_reason(error)}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = os.read(fd, 4096).decode("utf-8", "replace")
            os.close(fd)
            raise FolderInUse(f"{folder} is in use by another run ({_describe_holder(holder)}); "
                              "wait for it to end or choose another output folder") from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder removed it as we opened it: try again on the new file
    os.ftruncate(fd, 0)
    program = os.path.basename(sys.argv[0] or "python")
    if program == "__main__.py":  # python -m package
        program = f"python -m {os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0])))}"
    command = " ".join([program, *sys.argv[1:]])
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.write(fd, json.dumps(info).encode())
    return fd


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, `{info['command']}`, since {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet said which"


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
