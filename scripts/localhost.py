"""MLflow on localhost, for the MLflow UI script and the tests: a free port, a server started
and awaited, and stopping it with the workers it forked."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

SERVER_START_TIMEOUT_S = 60


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


@contextlib.contextmanager
def mlflow_on_localhost(command: str, options: list[str], cwd: Path, log: Path
                        ) -> Iterator[str]:
    """``mlflow <command> <options>`` (``ui`` or ``server``) on a free localhost port, with
    one worker and no job runner, its output in ``log``; yields its base URL once it answers
    ``/health`` and stops it, workers included, afterwards."""
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), command, *options, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    # No job runner (its huey consumers add processes and seconds of start-up); unbuffered
    # so the log has each request line by the time the client has its answer.
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", **os.environ,  # no usage report, as stages
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError as err:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow {command} did not answer {url}/health within "
                                       f"{SERVER_START_TIMEOUT_S} s:\n{log.read_text()[-5000:]}"
                                       ) from err
                time.sleep(0.25)
        yield url
    finally:
        stop_group(proc)
