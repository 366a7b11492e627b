"""MLflow tracking of pipeline stages: one run per stage execution, one nested run per seed.

A stage opens its tracker *after* training, so start-up never waits for MLflow and a trainer
killed mid-training leaves no run behind. ``import mlflow`` and the connection happen when the
tracker is entered, not when this module is imported::

    with tracker_for("augmentation", "augmentation@x_plus_y-negation", task="x_plus_y",
                     variant="negation", params=config) as tracker:
        tracker.log_metrics(headline)             # HEADLINE_METRICS: the visible columns
        tracker.log_dataset(card, "data/x_plus_y/card.json")
        tracker.log_table(per_seed, "seeds")
        for seed in seeds:
            with tracker.seed_run(seed) as run:
                run.log_history(history_of_seed)
                run.log_metrics(summary_of_seed)
        tracker.log_artifacts([out / "history.csv"])

A Ctrl-C'd stage calls :func:`record_interrupted` (a KILLED run saying the update it reached).

Tracking is best effort. When it is off (``GROKLAB_TRACKING=off``), MLflow is not installed,
the store is unreachable or corrupted, or a logging call fails later, the tracker prints one
line on stderr and becomes a no-op: a stage never fails, and never loses its DVC outputs,
because of MLflow. stdout is left alone (the CLI prints JSON there).

Each run is tagged with its host and process; when a stage's tracker opens, RUNNING runs of
the same stage (tag ``dvc.stage``) on this host whose process is gone are marked KILLED, so
the UI shows no ghosts. A run whose process is alive is never touched.

Every experiment gets the machine-learning kind tag and a saved view of its runs table,
"groklab: headline metrics" (HEADLINE_METRICS as the first columns). MLflow 3.17's UI opens
an experiment on its GenAI pages unless the sidebar switch says "Model training" or the link
says ``workflowType=machine_learning``, and hides metric columns until chosen; the link
:func:`ui_url` gives (``python -m groklab.tracking`` prints one per experiment) carries both the
switch and the view. "Override saved view" on that page makes the view the browser's default
for the experiment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from groklab.config import ConfigError
from groklab.mlflow_store import (
    HEADLINE_METRICS,
    card_dataset,
    connect,
    corruption,
    process_tags,
    sweep_all_ghosts,
    sweep_ghosts,
    ui_url,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HEADLINE_METRICS", "SeedRun", "StageTracker", "check_tracking_env", "flatten",
           "record_interrupted", "repo_root", "run_name", "run_tags", "stage_tracker",
           "tracking_uri", "ui_url"]

METRICS_PER_BATCH = 1000  # MLflow's limits per log_batch request
PARAMS_PER_BATCH = 100
MAX_PARAM_LEN = 6000
INTERRUPT_TIMEOUT_S = 10.0  # importing MLflow alone takes about 3 s on a 2-core laptop
_EXP_COPY = (".dvc", "tmp", "exps")
# Stages whose tracker marks the ghost runs of every stage (see sweep_all_ghosts).
SWEEPS_ALL = ("evaluate",)

RUN_NAME_SEP = " · "
INTERRUPTED_TAG = "groklab.interrupted_at_update"
TRACKING_ENV = "GROKLAB_TRACKING"
_ON, _OFF = ("on", "1", "true", "yes"), ("off", "0", "false", "no")


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


def check_tracking_env() -> bool:
    """Whether tracking is on, from ``GROKLAB_TRACKING`` (unset or empty: on).

    Cheap (MLflow is not imported): a stage calls it at start so a typo fails before training.
    Raises ConfigError naming the variable, its value and the allowed values.
    """
    value = os.environ.get(TRACKING_ENV, "").strip().lower()
    if value in ("", *_ON):
        return True
    if value in _OFF:
        return False
    raise ConfigError(f"{TRACKING_ENV}={os.environ[TRACKING_ENV]!r} is not allowed; "
                      f"use one of {', '.join(_ON + _OFF)}")


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


def run_name(stage: str, task: str | None = None, variant: str | None = None,
             exp: str | None = None) -> str:
    """What the runs table shows: ``x_plus_y · combined30``, the part that tells cells apart
    (the stage name is in the ``dvc.stage`` tag), then the DVC experiment that ran it when
    there is one (``x_plus_y · combined30 · first-look``), which tells apart the runs of one
    cell in different experiments; ``stage`` when there is no task."""
    if task is None:
        return stage
    return RUN_NAME_SEP.join(part for part in (task, variant, exp) if part)


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


class _Run:
    """What the stage run and its seed runs share: starting, ending and the logging calls."""

    _tracker: StageTracker
    run_name: str
    tags: dict[str, str]
    params: dict[str, Any]
    run_id: str | None = None

    def _live(self) -> bool:
        return self._tracker.enabled and self.run_id is not None

    def _start(self) -> None:
        t = self._tracker
        if not (t.enabled and (self is t or t.run_id is not None)):
            return
        from mlflow.entities import Param

        tags = self.tags if self is t else {**self.tags, "mlflow.parentRunId": t.run_id}
        with t._guard():
            run = t._client.create_run(t._experiment_id, run_name=self.run_name, tags=tags)
            self.run_id = run.info.run_id
            self._send(params=[Param(_key(k), v[:MAX_PARAM_LEN])
                               for k, v in flatten(self.params).items()])

    def _end(self, status: str) -> None:
        if self._live():
            with self._tracker._guard():
                self._tracker._client.set_terminated(self.run_id, status)

    def __enter__(self) -> Self:
        self._start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """FINISHED, FAILED on an exception (which propagates), KILLED on Ctrl-C."""
        self._end("FINISHED" if exc_type is None
                  else "FAILED" if issubclass(exc_type, Exception) else "KILLED")

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
        import pandas as pd
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

    def log_dataset(self, card: Mapping[str, Any], path: str | Path,
                    context: str = "train") -> None:
        """The dataset card as the run's dataset input (the runs table's Dataset column):
        named for its task, with a digest of the card, ``path`` as its source, the equation
        table's columns as schema and the card's sizes and leakage as profile."""
        if not self._live():
            return
        from mlflow.entities import DatasetInput, InputTag

        source = Path(path)  # a stage runs at the repository root (or a queued copy of it)
        for base in (Path.cwd(), self._tracker.root):
            if source.is_absolute():
                with contextlib.suppress(ValueError):
                    source = source.relative_to(base)
        with self._tracker._guard():
            inputs = [DatasetInput(card_dataset(card, source.as_posix()),
                                   tags=[InputTag("mlflow.data.context", context)])]
            for attempt in range(3):
                try:
                    self._tracker._client.log_inputs(self.run_id, inputs)
                    break
                except Exception:
                    # Two stages inserting the same new dataset at once: one loses the race
                    # ("UNIQUE constraint failed", "database is locked"); the retry finds it.
                    if attempt == 2:
                        raise
                    time.sleep(0.5 * (attempt + 1))

    def log_table(self, table: pd.DataFrame, name: str) -> None:
        """``table`` as an MLflow table (``tables/<name>.json``), which the UI shows as a table
        and compares across runs."""
        if not self._live():
            return
        with self._tracker._guard():
            self._tracker._client.log_table(self.run_id, table, f"tables/{_key(name)}.json")


class StageTracker(_Run):
    """One MLflow run for one stage execution, opened when entered; a no-op (with one line on
    stderr) when tracking is off, MLflow is missing, or the store is unreachable or corrupted.
    """

    def __init__(self, experiment: str, run_name: str, *, tags: Mapping[str, str] | None = None,
                 params: Mapping[str, Any] | None = None, root: Path | None = None):
        self._tracker = self
        self.experiment = experiment
        self.run_name, self.params = run_name, dict(params or {})
        self.tags = {**dict(tags or {}), **process_tags()}
        self.root = Path(root or repo_root()).absolute()
        self.uri = tracking_uri(self.root)
        self.enabled, self.skipped_reason = False, ""
        self.ghosts: list[str] = []  # runs of this stage this tracker marked KILLED
        self._client: Any = None
        self._experiment_id = ""

    def __enter__(self) -> Self:
        self.open()
        return super().__enter__()

    def open(self) -> None:
        """Import MLflow, connect, and mark this stage's ghosts KILLED (no run started yet)."""
        try:
            on = check_tracking_env()
        except ConfigError as err:
            self._skip(f"groklab: {err}; tracking skipped, DVC outputs are still written.")
            return
        if not on:
            self._skip(f"groklab: MLflow tracking is off ({TRACKING_ENV}="
                       f"{os.environ[TRACKING_ENV]}); DVC outputs are written as usual.")
            return
        try:
            self._client, self._experiment_id = connect(self.uri, self.experiment, self.root)
            self.enabled = True
        except ImportError as err:
            self._skip(f"groklab: MLflow cannot be imported here ({_reason(err)}); tracking "
                       "skipped, DVC outputs are still written. Install it (pip install mlflow) "
                       f"or set {TRACKING_ENV}=off.", reason=_reason(err))
            return
        except Exception as err:
            self._disable(err, at_start=True)
            return
        if stage := self.tags.get("dvc.stage"):
            with self._guard():
                self.ghosts = (sweep_all_ghosts(self._client) if stage in SWEEPS_ALL else
                               sweep_ghosts(self._client, self._experiment_id, stage))
            if self.ghosts:
                of = "any stage" if stage in SWEEPS_ALL else stage
                print(f"groklab: marked {len(self.ghosts)} MLflow run(s) of {of} KILLED: "
                      f"the process that ran them on {socket.gethostname()} is gone.",
                      file=sys.stderr, flush=True)

    def _skip(self, line: str, reason: str | None = None) -> None:
        self.enabled, self._client = False, None
        self.skipped_reason = reason or line
        # print, not logging: it must be seen whatever logging config the stage has
        print(line, file=sys.stderr, flush=True)

    def _disable(self, err: BaseException, *, at_start: bool = False) -> None:
        if self.skipped_reason:  # said so already
            return
        reason = _reason(err)
        if phrase := corruption(err):
            self._skip(self._corrupted_line(phrase), reason=phrase)
            return
        if not at_start:
            fix = ""
        elif os.environ.get("MLFLOW_TRACKING_URI"):
            fix = (" Start the server or unset MLFLOW_TRACKING_URI to use "
                   f"{_default_uri(self.root)}.")
        else:
            fix = f" Make {self.root} writable, or set MLFLOW_TRACKING_URI to a running server."
        what = ("is unreachable ({}); tracking skipped" if at_start
                else "failed ({}); tracking turned off for the rest of this stage")
        self._skip(f"groklab: MLflow tracking at {self.uri} {what.format(reason)}, "
                   f"DVC outputs are still written.{fix}", reason=reason)

    def _corrupted_line(self, phrase: str) -> str:
        if not self.uri.startswith("sqlite:///"):
            return (f"groklab: the MLflow store behind {self.uri} is corrupted ({phrase}); "
                    "tracking skipped, the DVC outputs are intact. Restore or replace the "
                    "server's store.")
        db = Path(self.uri.removeprefix("sqlite:///"))
        return (f"groklab: the MLflow store at {db} is corrupted ({phrase}); tracking skipped, "
                f"the DVC outputs are intact. To start a new store, move it aside: "
                f"mv {db} {db}.corrupt")

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


def stage_tracker(experiment: str, stage: str, *, task: str | None = None,
                  variant: str | None = None, params: Mapping[str, Any] | None = None,
                  root: Path | None = None) -> StageTracker:
    """The tracker of one stage execution, named for its task and variant, tagged with the
    DVC stage, study, git commit, host and process. Nothing is imported or connected until
    it is entered."""
    tags = run_tags(stage=stage, study=experiment, task=task, variant=variant)
    name = run_name(stage, task, variant, os.environ.get("DVC_EXP_NAME"))
    return StageTracker(experiment, name, tags=tags, params=params, root=root)


def record_interrupted(experiment: str, stage: str, *, step: int, task: str | None = None,
                       variant: str | None = None, params: Mapping[str, Any] | None = None,
                       root: Path | None = None,
                       timeout_s: float = INTERRUPT_TIMEOUT_S) -> bool:
    """Best effort, for a Ctrl-C'd stage: a KILLED run of ``stage`` with the update it reached
    (tag ``groklab.interrupted_at_update`` and metric ``interrupted_at_update``).

    Gives up after ``timeout_s`` seconds with one line on stderr; True when recorded.
    """
    tracker = stage_tracker(experiment, stage, task=task, variant=variant, params=params,
                            root=root)
    tracker.tags[INTERRUPTED_TAG] = str(step)
    done = threading.Event()

    def record() -> None:
        tracker.open()
        tracker._start()
        tracker.log_metrics({"interrupted_at_update": step}, step=step)
        tracker._end("KILLED")
        if tracker._live():
            done.set()

    # A daemon thread: a store that hangs must not keep the interrupted stage from exiting.
    thread = threading.Thread(target=record, name="groklab-record-interrupted", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        print(f"groklab: MLflow at {tracker.uri} did not answer within {timeout_s:g} s; the "
              f"interruption of {stage} was not recorded.", file=sys.stderr, flush=True)
    return done.is_set()


DEFAULT_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves unless told otherwise
_UI_FLAGS = {"--port": "port", "-p": "port", "--host": "host", "-h": "host",
             "--backend-store-uri": "store"}


def _store_path(store: str, cwd: Path) -> Path | None:
    """The file of a ``sqlite:///`` store (relative paths from ``cwd``); None otherwise."""
    if not store.startswith("sqlite:///"):
        return None
    path = Path(store.removeprefix("sqlite:///"))
    return (path if path.is_absolute() else cwd / path).resolve()


def running_ui(uri: str, proc: Path = Path("/proc")) -> str | None:
    """The address of a running ``mlflow ui`` or ``mlflow server`` whose store is ``uri``,
    read from its command line (Linux's /proc); None when there is none."""
    want = _store_path(uri, Path.cwd())
    for cmdline in sorted(proc.glob("[0-9]*/cmdline")):
        try:
            args = [a.decode(errors="replace") for a in cmdline.read_bytes().split(b"\0") if a]
            cwd = (cmdline.parent / "cwd").resolve()
        except OSError:
            continue
        at = next((i for i, a in enumerate(args[:-1]) if Path(a).name == "mlflow"
                   and args[i + 1] in ("ui", "server")), None)
        if at is None:
            continue
        found = {"port": "5000", "host": "127.0.0.1", "store": "sqlite:///mlflow.db"}
        rest = args[at + 2:]
        for i, arg in enumerate(rest):
            flag, eq, value = arg.partition("=")
            if flag in _UI_FLAGS:
                found[_UI_FLAGS[flag]] = value if eq else (rest[i + 1] if i + 1 < len(rest)
                                                           else "")
        same = (found["store"] == uri if want is None
                else _store_path(found["store"], cwd) == want)
        if same:
            host = "127.0.0.1" if found["host"] in ("0.0.0.0", "::", "") else found["host"]
            return f"http://{host}:{found['port']}"
    return None


def main(argv: list[str] | None = None) -> None:
    """Print the link to each experiment's runs table for the ``mlflow ui`` on this store:
    the one running (its port read from its command line), else ``--ui``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--ui", help="where `mlflow ui` serves (default: the running one, "
                        f"else {DEFAULT_UI})")
    args = parser.parse_args(argv)
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        sys.exit(f"groklab: no MLflow store at {uri} yet; run a stage first")
    if args.ui is None:
        args.ui = running_ui(uri)
        if args.ui is None:
            args.ui = DEFAULT_UI
            print(f"groklab: no running `mlflow ui` serves {uri}; the links assume "
                  f"{DEFAULT_UI} (start one: mlflow ui --backend-store-uri {uri}; or pass "
                  "--ui)", file=sys.stderr)
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    for exp in MlflowClient(uri).search_experiments(order_by=["name ASC"]):
        if exp.name != "Default":
            print(f"{exp.name}: {ui_url(args.ui, exp.experiment_id)}")


if __name__ == "__main__":
    main()
