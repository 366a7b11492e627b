"""CPU sharing among trainers that run at once."""

import os
import subprocess
import sys
import textwrap

import torch

from groklab.cpu import CpuShare

CHILD = textwrap.dedent("""
    import sys, time
    from groklab.cpu import CpuShare
    share = CpuShare()
    print("ready", flush=True)
    sys.stdin.readline()
""")


def test_threads_split_between_concurrent_trainers(monkeypatch):
    monkeypatch.delenv("GROKLAB_THREADS", raising=False)
    cores = os.cpu_count() or 1
    with CpuShare() as alone:
        assert alone.rebalance(force=True) == cores
        other = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert other.stdout.readline().strip() == "ready"
            assert alone.active() == 2
            assert alone.rebalance(force=True) == max(1, cores // 2)
            assert torch.get_num_threads() == max(1, cores // 2)
        finally:
            other.communicate("\n", timeout=30)
        assert alone.active() == 1 and alone.rebalance(force=True) == cores


def test_environment_fixes_the_thread_count(monkeypatch):
    monkeypatch.setenv("GROKLAB_THREADS", "1")
    before = torch.get_num_threads()
    with CpuShare() as share:
        assert share.rebalance(force=True) == 1
    torch.set_num_threads(before)
