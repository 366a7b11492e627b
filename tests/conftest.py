"""Shared fixtures: a real MLflow tracking server on localhost, started once per session."""

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The scripts and benchmarks the tests import (localhost, first_look_params, train_speed...)
for folder in ("scripts", "benchmarks"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))
from localhost import free_port, mlflow_on_localhost  # noqa: E402

# A test session started in the background by a non-interactive shell (`pytest &`) inherits
# SIGINT ignored, and so would every process it starts: the Ctrl-C tests would wait on
# trainers that never stop, and leave them running. Those tests send SIGINT on purpose.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def mlflow_server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the server keeps its database, artifacts and log (server.log)."""
    return tmp_path_factory.mktemp("mlflow_server", numbered=False)


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_dir: Path) -> Iterator[str]:
    """URI of a real ``mlflow server`` (SQLite backend, proxied artifacts) for the session."""
    tmp = mlflow_server_dir
    options = ["--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
               "--artifacts-destination", str(tmp / "artifacts")]
    with mlflow_on_localhost("server", options, tmp, tmp / "server.log") as uri:
        yield uri


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
