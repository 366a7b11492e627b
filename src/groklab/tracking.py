"""MLflow tracking of pipeline stages: one run per stage execution, one nested run per seed.

Tracking is best effort. When the store is unreachable, or a logging call fails later, the
tracker prints one warning on stderr and becomes a no-op: a stage never fails, and never
loses its DVC outputs, because of MLflow. stdout is left alone (the CLI prints JSON there).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlflow import MlflowClient

METRICS_PER_BATCH = 1000  # MLflow's limits per log_batch request
PARAMS_PER_BATCH = 100
MAX_PARAM_LEN = 6000
PROBE_TIMEOUT_S = 3.0
# MLflow's HTTP client retries a dead server for minutes by default; a stage should not wait.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                 # set_terminated otherwise writes "View run ... at" to stdout
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
_EXP_COPY = (".dvc", "tmp", "exps")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def repo_root(cwd: Path | None = None) -> Path:
    """The real repository root: DVC_ROOT, else the git toplevel of ``cwd``, else ``cwd``.

    Queued ``dvc exp run`` jobs run in ``<root>/.dvc/tmp/exps/<tmp>/``, which DVC deletes
    afterwards, so a path inside such a copy is mapped back to the root that holds it.
    """
    cwd = Path(cwd or Path.cwd()).absolute()
    env = os.environ.get("DVC_ROOT")
    path = Path(env).absolute() if env else cwd
    parts = path.parts
    for i in range(len(parts) - 3):
        if parts[i:i + 3] == _EXP_COPY:
            return Path(*parts[:i])
    if env:
        return path
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    return Path(top) if top else cwd


def _default_uri(root: Path) -> str:
    return f"sqlite:///{Path(root).absolute().as_posix()}/mlflow.db"


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI when set, else ``sqlite:///<repo root>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or _default_uri(root or repo_root())


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"data": {"p": 97}}`` -> ``{"data.p": "97"}``; non-strings are written as JSON
    (``null``, ``true``, ``[0.9, 0.98]``) so values read as they do in params.yaml."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v, default=str)
    return out


def run_tags(*, stage: str, study: str, task: str | None = None,
             variant: str | None = None) -> dict[str, str]:
    """Tags of a stage run; ``git.commit`` is that of the working copy the stage runs in."""
    tags = {"dvc.stage": stage, "study": study}
    if exp := os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = exp
    if commit := _git(["rev-parse", "HEAD"], Path.cwd()):
        tags["git.commit"] = commit
    tags.update({k: v for k, v in (("task", task), ("variant", variant)) if v is not None})
    return tags


def _key(name: str) -> str:
    # One bad character would make MLflow reject a whole batch.
    return re.sub(r"[^/\w.\- :]", "_", name)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror.lower()}{where}"
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _probe(uri: str) -> None:
    """Fail fast on a dead http(s) server; 4xx means something answered (auth, a proxy)."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError as err:
        if err.code >= 500:
            raise ConnectionError(f"/health answered HTTP {err.code}") from err


@contextlib.contextmanager
def _first_use_lock(uri: str) -> Iterator[None]:
    """Serialise opening a SQLite store: stages that create it at once race in MLflow's schema
    migrations ("duplicate column name"). The lock file lives in /tmp, out of the repo."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = os.path.abspath(uri.removeprefix("sqlite:///"))
    digest = hashlib.sha1(db.encode()).hexdigest()[:16]
    # Read-only: flock needs no write access, so another user's lock file still works.
    fd = os.open(Path(tempfile.gettempdir()) / f"groklab-mlflow-{digest}.lock",
                 os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _artifact_location(uri: str, experiment: str, root: Path) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite store, else the server decides.

    Set explicitly because MLflow's default (./mlruns under the current directory) would
    land in a queued experiment's temporary copy, which is deleted after the run.
    """
    if not uri.startswith("sqlite:///"):
        return None
    store_dir = Path(uri.removeprefix("sqlite:///")).resolve().parent
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        store_dir = root
    return (store_dir / "mlartifacts" / re.sub(r"[^\w.-]", "_", experiment)).as_uri()


def _connect(uri: str, experiment: str, root: Path) -> tuple[MlflowClient, str]:
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        _probe(uri)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if "MLFLOW_LOGGING_LEVEL" not in os.environ:  # alembic migrations etc. log at INFO
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    with _first_use_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = _artifact_location(uri, experiment, root)
        try:
            return client, client.create_experiment(experiment, artifact_location=location)
        except MlflowException:  # a concurrent stage created it first
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return client, exp.experiment_id


class _Run:
    """What the stage run and its seed runs share: starting, ending and the logging calls."""

    _tracker: StageTracker
    run_name: str
    tags: dict[str, str]
    params: dict[str, Any]
    run_id: str | None = None

    def _live(self) -> bool:
        return self._tracker.enabled and self.run_id is not None

    def __enter__(self) -> Self:
        t = self._tracker
        if t.enabled and (self is t or t.run_id is not None):
            from mlflow.entities import Param

            tags = self.tags if self is t else {**self.tags, "mlflow.parentRunId": t.run_id}
            with t._guard():
                run = t._client.create_run(t._experiment_id, run_name=self.run_name, tags=tags)
                self.run_id = run.info.run_id
                self._send(params=[Param(_key(k), v[:MAX_PARAM_LEN])
                                   for k, v in flatten(self.params).items()])
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """FINISHED, FAILED on an exception (which propagates), KILLED on Ctrl-C."""
        if self._live():
            status = ("FINISHED" if exc_type is None
                      else "FAILED" if issubclass(exc_type, Exception) else "KILLED")
            with self._tracker._guard():
                self._tracker._client.set_terminated(self.run_id, status)

    def _send(self, metrics: Sequence[Any] = (), params: Sequence[Any] = ()) -> None:
        client = self._tracker._client
        with self._tracker._guard():
            for i in range(0, len(params), PARAMS_PER_BATCH):
                client.log_batch(self.run_id, params=params[i:i + PARAMS_PER_BATCH])
            for i in range(0, len(metrics), METRICS_PER_BATCH):
                client.log_batch(self.run_id, metrics=metrics[i:i + METRICS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log the finite numeric values of ``metrics`` in one request."""
        if not self._live():
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._send([Metric(_key(k), float(v), now, step or 0) for k, v in metrics.items()
                    if isinstance(v, int | float | np.number) and np.isfinite(v)])

    def log_history(self, history: pd.DataFrame, *, step_col: str = "step",
                    prefix: str = "") -> None:
        """Every numeric column but ``step_col`` and ``seed`` as a per-step metric series
        (one seed's rows per run: the steps of several seeds would interleave)."""
        if not self._live():
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        steps = history[step_col].to_numpy(dtype=np.int64)
        batch = []
        for col in history.columns:
            if col in (step_col, "seed") or not pd.api.types.is_numeric_dtype(history[col]):
                continue
            values = history[col].to_numpy(dtype=np.float64)
            ok = np.isfinite(values)  # NaN: no evaluation at that step
            key = _key(f"{prefix}{col}")
            batch += [Metric(key, v, now, s)
                      for v, s in zip(values[ok].tolist(), steps[ok].tolist(), strict=True)]
        self._send(batch)

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str | None = None) -> None:
        """Upload files, and directories under their own name, below ``artifact_path``."""
        if not self._live():
            return
        client = self._tracker._client
        with self._tracker._guard():
            for path in map(Path, paths):
                if path.is_dir():
                    sub = f"{artifact_path}/{path.name}" if artifact_path else path.name
                    client.log_artifacts(self.run_id, str(path), sub)
                else:
                    client.log_artifact(self.run_id, str(path), artifact_path)


class StageTracker(_Run):
    """One MLflow run for one stage execution; a no-op (with one warning) when tracking is
    unreachable."""

    def __init__(self, experiment: str, run_name: str, *, tags: Mapping[str, str] | None = None,
                 params: Mapping[str, Any] | None = None, root: Path | None = None):
        self._tracker = self
        self.run_name, self.tags, self.params = run_name, dict(tags or {}), dict(params or {})
        self.root = Path(root or repo_root()).absolute()
        self.uri = tracking_uri(self.root)
        self.enabled, self.skipped_reason = False, ""
        self._client: Any = None
        self._experiment_id = ""
        try:
            self._client, self._experiment_id = _connect(self.uri, experiment, self.root)
            self.enabled = True
        except Exception as err:
            self._disable(err, at_start=True)

    def _disable(self, err: BaseException, *, at_start: bool = False) -> None:
        if self.skipped_reason:  # warned already
            return
        self.enabled, self.skipped_reason, self._client = False, _reason(err), None
        if not at_start:
            fix = ""
        elif os.environ.get("MLFLOW_TRACKING_URI"):
            fix = (" Start the server or unset MLFLOW_TRACKING_URI to use "
                   f"{_default_uri(self.root)}.")
        else:
            fix = f" Make {self.root} writable, or set MLFLOW_TRACKING_URI to a running server."
        what = ("is unreachable ({}); tracking skipped" if at_start
                else "failed ({}); tracking turned off for the rest of this stage")
        # print, not logging: it must be seen whatever logging config the stage has
        print(f"groklab: MLflow tracking at {self.uri} {what.format(self.skipped_reason)}, "
              f"DVC outputs are still written.{fix}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except Exception as err:
            self._disable(err)

    def seed_run(self, seed: int, *, params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, str] | None = None) -> SeedRun:
        """A nested run named ``seed <seed>``, to use as a context manager."""
        return SeedRun(self, seed, params=params, tags=tags)


class SeedRun(_Run):
    """A child run of a :class:`StageTracker` run; a no-op when tracking is off."""

    def __init__(self, parent: StageTracker, seed: int, *, params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, str] | None = None):
        self._tracker, self.run_name = parent, f"seed {seed}"
        self.tags = {**parent.tags, "seed": str(seed), **(tags or {})}
        self.params = {"seed": seed, **(params or {})}
