"""Share the CPU cores among groklab trainers running at once (`dvc queue start -j N`).

Two processes that each run one OpenMP thread per core spin against each other: on a
2-core machine two such trainers ran 3.2x slower each (147 ms per update instead of 46).
So each trainer claims one slot per thread it runs (a locked file, one per core, in a
directory of the user's own) and, while the cores are taken, waits for free ones instead
of oversubscribing them.

The thread count is ``GROKLAB_THREADS``, else the number of cores: never a function of
what else runs. Reductions split over a different number of threads sum in a different
order: one-seed runs of x_plus_y (p=97 full batch; p=23 batches of 32) gave different
history and weights for each thread count from 1 to 8, so a count chosen from the load
would make a rerun beside another trainer differ from the same run alone. To train side
by side with ``-j N``, set ``GROKLAB_THREADS`` to cores / N: runs with the same thread
count give the same bytes.

The slot directory is ``<tmp>/groklab-<uid>/cpu-slots`` (``GROKLAB_CPU_SLOTS`` overrides
it), created mode 0700 and used only while it is owned by the user and writable by no one
else. If it cannot be used, the trainer warns once and trains without waiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from groklab.config import ConfigError
from groklab.train import resolve_device

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often a waiting trainer looks for free cores
_warned = False  # the fallback warning is printed once per process


def slot_dirs() -> list[Path]:
    """The directories to make private, the slot directory last: ``GROKLAB_CPU_SLOTS``, or
    this user's ``<tmp>/groklab-<uid>`` and its ``cpu-slots``."""
    override = os.environ.get("GROKLAB_CPU_SLOTS")
    if override:
        return [Path(override)]
    mine = Path(tempfile.gettempdir()) / f"groklab-{os.geteuid()}"
    return [mine, mine / "cpu-slots"]


def thread_count() -> int:
    """``GROKLAB_THREADS`` when set, else the number of cores."""
    text = os.environ.get("GROKLAB_THREADS", "")
    if not text:
        return os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"GROKLAB_THREADS={text!r} must be a positive integer (or unset)")
    return int(text)


def _private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) if missing; refuse one another user could tamper with."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise OSError(f"{path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()})")
    if st.st_mode & 0o022:
        raise OSError(f"{path} is writable by other users (mode {st.st_mode & 0o777:o})")


def _try_lock(path: Path) -> int | None:
    """A descriptor holding ``path``'s lock, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class CpuShare:
    """Holds :attr:`threads` core slots for the life of the object (waiting for them while
    other trainers hold the cores) and sets torch's thread count to :attr:`threads`.

    A trainer on a GPU (``device`` resolving to CUDA) claims no cores: it hardly uses them.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.cores = os.cpu_count() or 1
        self.threads = thread_count()
        self.slots: list[int] = []  # locked descriptors, released by close()
        dirs = slot_dirs()
        self.directory: Path | None = dirs[-1]
        try:
            for path in dirs:
                _private_dir(path)
            if resolve_device(device).type == "cpu":
                self._wait_for_cores(min(self.threads, self.cores))
        except OSError as err:
            self._warn(err)
            self.close()
            self.directory = None
        torch.set_num_threads(self.threads)
        log.info("using %d thread(s) on %d core(s)", self.threads, self.cores)

    def _wait_for_cores(self, want: int) -> None:
        told = False
        while not self._claim(want):
            if not told:
                log.warning("waiting for %d free core(s): other groklab trainers hold %d of "
                            "%d (see GROKLAB_THREADS to train side by side)",
                            want, self.busy(), self.cores)
                told = True
            time.sleep(POLL_S)

    @contextlib.contextmanager
    def _gate(self) -> Iterator[Path]:
        """The slot directory, locked against other trainers claiming or counting slots."""
        assert self.directory is not None
        gate = os.open(self.directory / "gate", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(gate, fcntl.LOCK_EX)
            yield self.directory
        finally:
            os.close(gate)  # releases the lock

    def _claim(self, want: int) -> bool:
        """Lock ``want`` free slots at once, or none (two trainers each holding part of
        what both need would wait for ever)."""
        with self._gate() as directory:
            for i in range(self.cores):
                fd = _try_lock(directory / f"core{i}")
                if fd is not None:
                    self.slots.append(fd)
                if len(self.slots) == want:
                    return True
            self.close()
            return False

    def _warn(self, err: OSError) -> None:
        global _warned
        if not _warned:
            reason = f"{err.strerror}: {err.filename}" if err.strerror else str(err)
            log.warning("CPU sharing with other groklab trainers is off (%s); set "
                        "GROKLAB_CPU_SLOTS to a directory of your own to turn it on", reason)
            _warned = True

    def busy(self) -> int:
        """Core slots held by trainers right now, this one's included."""
        if self.directory is None:
            return len(self.slots)
        mine = {os.fstat(fd).st_ino for fd in self.slots}  # a second lock on them would fail
        busy = len(self.slots)
        with self._gate() as directory:
            for i in range(self.cores):
                path = directory / f"core{i}"
                if path.exists() and path.stat().st_ino not in mine:
                    fd = _try_lock(path)
                    busy += fd is None
                    if fd is not None:
                        os.close(fd)
        return busy

    def close(self) -> None:
        while self.slots:
            os.close(self.slots.pop())  # closing releases the lock

    def __enter__(self) -> CpuShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
