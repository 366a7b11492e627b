"""Shared fixtures: a real MLflow tracking server on localhost, started once per session."""

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from localhost import free_port, stop_group

SERVER_START_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def mlflow_server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the server keeps its database, artifacts and log (server.log)."""
    return tmp_path_factory.mktemp("mlflow_server", numbered=False)


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_dir: Path) -> Iterator[str]:
    """URI of a real ``mlflow server`` (SQLite backend, proxied artifacts) for the session."""
    tmp, port = mlflow_server_dir, free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
           "--artifacts-destination", str(tmp / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # No job runner (its huey consumers add processes and seconds of start-up); unbuffered
    # so server.log has each request line by the time the client has its answer.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = tmp / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_group(proc)
                pytest.fail(f"mlflow server did not answer {uri}/health within "
                            f"{SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-5000:]}")
            time.sleep(0.25)
    yield uri
    stop_group(proc)


@pytest.fixture
def unused_port() -> int:
    """A localhost port with nothing listening (for an unreachable tracking URI)."""
    return free_port()


@pytest.fixture(scope="session", autouse=True)
def own_cpu_slots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """CPU slots of the session's own (groklab.cpu): the trainers tests start never wait
    for other groklab trainers on the machine, nor make them wait."""
    path = tmp_path_factory.mktemp("cpu-slots")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GROKLAB_CPU_SLOTS", str(path))
        yield path
