"""Localhost servers for the tests: a free port, and stopping a server with its workers."""

import contextlib
import os
import signal
import socket
import subprocess


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen) -> None:
    """Stop ``proc`` and what it forked: it must lead its process group
    (``start_new_session=True``), as MLflow's server forks uvicorn workers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue
