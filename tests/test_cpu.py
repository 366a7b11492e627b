"""CPU sharing among trainers that run at once, in a slot directory of each test's own."""

import logging
import os
import selectors
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch

from groklab import cpu
from groklab.config import ConfigError
from groklab.cpu import CpuShare

CORES = os.cpu_count() or 1
CHILD = textwrap.dedent("""
    import sys
    from groklab.cpu import CpuShare
    print("starting", flush=True)
    share = CpuShare()
    print("ready", share.threads, flush=True)
    sys.stdin.readline()
""")


@pytest.fixture
def slots(tmp_path, monkeypatch):
    """A slot directory no other trainer on the machine uses; torch's thread count restored."""
    path = tmp_path / "slots"
    monkeypatch.setenv("GROKLAB_CPU_SLOTS", str(path))
    monkeypatch.delenv("GROKLAB_THREADS", raising=False)
    monkeypatch.setattr(cpu, "_warned", False)
    before = torch.get_num_threads()
    yield path
    torch.set_num_threads(before)


def readline(stream, timeout: float) -> str | None:
    """The next line of a child's pipe, or None if none comes within ``timeout`` s."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        return stream.readline() if sel.select(timeout) else None


def test_a_trainer_waits_for_free_cores_rather_than_take_fewer_threads(slots):
    """The thread count never depends on what else runs: a trainer that finds the cores
    taken waits for them, then runs as many threads as it would have alone."""
    with CpuShare() as first:  # alone: every core, one slot per thread
        assert first.threads == CORES == torch.get_num_threads()
        assert first.busy() == CORES
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert readline(child.stdout, 60) == "starting\n"
            waiting = readline(child.stderr, 60)  # the one line saying why it is idle
            assert waiting is not None and f"waiting for {CORES} free core" in waiting
            assert readline(child.stdout, 2 * cpu.POLL_S) is None  # still waiting
            first.close()  # the cores come free
            assert readline(child.stdout, 10 * cpu.POLL_S) == f"ready {CORES}\n"
            assert first.busy() == CORES  # counted from outside: the child's slots
        finally:
            child.communicate("\n", timeout=30)
        assert torch.get_num_threads() == CORES  # never rebalanced
    assert first.busy() == 0


@pytest.mark.skipif(CORES < 2, reason="needs two cores for two one-thread trainers")
def test_one_thread_trainers_run_side_by_side(slots, monkeypatch):
    monkeypatch.setenv("GROKLAB_THREADS", "1")
    with CpuShare() as a, CpuShare() as b:
        assert a.threads == b.threads == 1 == torch.get_num_threads()
        assert a.busy() == b.busy() == 2


def test_environment_fixes_the_thread_count(slots, monkeypatch):
    monkeypatch.setenv("GROKLAB_THREADS", "1")
    with CpuShare() as share:
        assert share.threads == 1 == torch.get_num_threads()
        assert len(share.slots) == 1  # still counted by other trainers


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_count_is_named(slots, monkeypatch, value):
    monkeypatch.setenv("GROKLAB_THREADS", value)
    with pytest.raises(ConfigError, match=f"GROKLAB_THREADS='{value}' must be a positive"):
        CpuShare()


def test_default_slot_directory_is_per_user_and_private(monkeypatch, tmp_path):
    monkeypatch.delenv("GROKLAB_CPU_SLOTS", raising=False)
    monkeypatch.setenv("GROKLAB_THREADS", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with CpuShare() as share:
        assert share.directory == tmp_path / f"groklab-{os.geteuid()}" / "cpu-slots"
        assert len(share.slots) == 1
    for path in (share.directory.parent, share.directory):
        st = os.lstat(path)
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()


def another_users(path):
    """Make ``path`` a directory this user may not use: another user's (as root, who may
    write anywhere) or one without write permission."""
    path.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    else:
        path.chmod(0o500)


def test_a_slot_directory_not_yours_turns_sharing_off_with_one_warning(slots, caplog):
    another_users(slots)
    with caplog.at_level(logging.WARNING, logger="groklab.cpu"), \
            CpuShare() as first, CpuShare() as second:  # the second would wait if it shared
        assert first.slots == [] and second.slots == [] and first.directory is None
        assert second.threads == CORES
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(slots) in warnings[0] and "off" in warnings[0]
    assert list(slots.iterdir()) == []  # nothing written into another user's directory


def test_a_group_writable_slot_directory_is_refused(slots, caplog):
    slots.mkdir()
    slots.chmod(0o770)
    with caplog.at_level(logging.WARNING, logger="groklab.cpu"), CpuShare() as share:
        assert share.slots == []
    assert "writable by other users" in caplog.text
