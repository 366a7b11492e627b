"""The MLflow store as the stage tracker opens it: connecting (fast failure on a dead server,
one migration at a time on a new SQLite file), the experiment's kind tag and saved view, ghost
runs of dead processes, a corrupted store, and the dataset card as an MLflow dataset.

Nothing here imports MLflow at module level: :mod:`groklab.tracking` calls :func:`connect`
when a tracker is entered, after training.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow 3 looks up its telemetry host (config.mlflow-telemetry.io) and sends usage events
# unless told not to; a research tool sends nothing anywhere the user did not ask for. Set
# before MLflow is imported (it reads the variable when it would send); a user who sets
# MLFLOW_DISABLE_TELEMETRY=false keeps MLflow's default. DVC's analytics: .dvc/config.
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true"}
for _name, _value in TELEMETRY_OFF.items():
    os.environ.setdefault(_name, _value)

PROBE_TIMEOUT_S = 3.0
# MLflow's HTTP client retries a dead server for minutes by default; a stage should not wait.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                 # set_terminated otherwise writes "View run ... at" to stdout
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}

# What a cell run logs first and the UI shows first: the few numbers a researcher compares.
# Clean validation accuracy stands beside validation accuracy, left of the columns a side
# panel (MLflow's Assistant) can cover, so a rise that is leakage is seen as such.
HEADLINE_METRICS = ("steps_to_99_mean", "clean_val_acc_mean", "final_val_acc_mean",
                    "frac_groks")
# An experiment's kind in MLflow 3; custom_model_development is the machine-learning kind
# (runs, metrics), not GenAI traces. (3.17's UI follows its sidebar switch instead: ui_url.)
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
# A saved view of the experiment page is an experiment tag with this prefix; the page loads it
# from ?viewStateShareKey=<key> and lists it under "Views".
VIEW_KEY = "groklab"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_NAME = "groklab: headline metrics"
HOST_TAG, PID_TAG, PID_START_TAG = "groklab.host", "groklab.pid", "groklab.pid_start"
_CORRUPT = ("database disk image is malformed", "file is not a database")


def _process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, Linux); tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22; the name before ")" may hold spaces


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` (started at ``start``, when known) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    if _process_state(pid) == "Z":  # killed, not yet reaped by its parent
        return False
    return start is None or _process_start(pid) in (None, start)


def process_tags() -> dict[str, str]:
    """Host and process of this stage execution, read by the ghost sweep of later ones."""
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    if start := _process_start(pid):
        tags[PID_START_TAG] = start
    return tags


# Header widths the UI needs to show a name whole (140 px cuts "clean_val_acc_mean" short).
WIDER = {"metrics.`clean_val_acc_mean`": 156}


def view_state(metrics: Sequence[str] = HEADLINE_METRICS) -> dict[str, Any]:
    """The experiment page's state in the saved view: ``metrics`` as the first columns after
    the run name, then the dataset and duration (the UI hides metric columns by default and
    otherwise orders them alphabetically)."""
    name, dataset = "attributes.`Run Name`", "attributes.`Dataset`"
    cols = [f"metrics.`{m}`" for m in metrics]
    # The page applies a width only to a column named in columnOrder.
    return {"selectedColumns": [*cols, dataset],
            "columnOrder": [name, *cols, dataset, "duration"],
            "columnWidths": {name: 250, **dict.fromkeys(cols, 140), **WIDER}}


def ui_url(base_url: str, experiment_id: str) -> str:
    """The runs table of an experiment, in the saved view, in the MLflow UI at ``base_url``."""
    return (f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def corruption(err: BaseException) -> str | None:
    """SQLite's own words when ``err`` (or what caused it) says the store is corrupted."""
    for e in _chain(err):
        text = str(e).lower()
        for phrase in _CORRUPT:
            if phrase in text:
                return phrase
    return None


def quick_check(uri: str) -> None:
    """Raise ``sqlite3.DatabaseError`` (whose words :func:`corruption` knows) when the SQLite
    store at ``uri`` fails ``PRAGMA quick_check``: a damaged page that MLflow's own queries
    may never read, so a stage would log into it unaware. Read-only; a store that does not
    exist yet passes. quick_check skips integrity_check's index-content cross-checks, so it
    costs a read of the file (benchmarks/mlflow_quick_check.py measures it)."""
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri.removeprefix("sqlite:///"))
    if not db.is_file() or db.stat().st_size == 0:
        return
    import sqlite3

    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = con.execute("PRAGMA quick_check(3)").fetchall()
    finally:
        con.close()
    if rows != [("ok",)]:
        raise sqlite3.DatabaseError(f"database disk image is malformed (PRAGMA quick_check: "
                                    f"{rows[0][0]})")


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


def connect(uri: str, experiment: str, root: Path) -> tuple[MlflowClient, str]:
    """A client and the experiment's id; creates the experiment, gives it (or an older one
    that lacks it) the machine-learning kind tag, and writes the saved view."""
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        _probe(uri)
    quick_check(uri)  # before MLflow writes a row into a damaged file
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if "MLFLOW_LOGGING_LEVEL" not in os.environ:  # alembic migrations etc. log at INFO
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    with _first_use_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = _artifact_location(uri, experiment, root)
        with contextlib.suppress(MlflowException):  # a concurrent stage created it first
            client.create_experiment(experiment, artifact_location=location,
                                     tags={KIND_TAG: KIND})
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise LookupError(f"experiment {experiment!r} was neither found nor created")
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if KIND_TAG not in exp.tags:  # a kind someone chose is left alone
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
    # The view is this module's own tag, kept current. creation_time keeps its text the same
    # on every open, so it is written once (the UI's "Save as new view" writes other keys).
    view = json.dumps({"name": VIEW_NAME, "createdAt": exp.creation_time or 0,
                       "state": json.dumps(view_state())})
    if exp.tags.get(VIEW_TAG) != view:
        client.set_experiment_tag(exp.experiment_id, VIEW_TAG, view)
    return client, exp.experiment_id


def sweep_ghosts(client: MlflowClient, experiment_id: str | list[str],
                 stage: str | None) -> list[str]:
    """Mark KILLED the RUNNING runs of ``stage`` (None: of any stage) in the experiment(s)
    started on this host by a process that is gone.

    Runs without host and pid tags (or from another host) are left alone: nothing proves
    their process dead. Returns the ids of the runs marked.
    """
    host = socket.gethostname()
    ids = [experiment_id] if isinstance(experiment_id, str) else experiment_id
    marked, token = [], None
    while ids:
        page = client.search_runs(ids, filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000, page_token=token)
        for run in page:
            tags = run.data.tags
            pid = tags.get(PID_TAG, "")
            if (stage not in (None, tags.get("dvc.stage")) or tags.get(HOST_TAG) != host
                    or not pid.isdigit() or process_alive(int(pid), tags.get(PID_START_TAG))):
                continue
            client.set_terminated(run.info.run_id, "KILLED")
            marked.append(run.info.run_id)
        if not (token := page.token):
            return marked
    return marked


def sweep_all_ghosts(client: MlflowClient) -> list[str]:
    """:func:`sweep_ghosts` of every stage in every experiment. A stage that DVC restores
    from its run cache runs no code, so no tracker of its own would ever mark the run its
    killed execution left RUNNING; `evaluate`, which reads every stage's outputs, does."""
    ids = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    return sweep_ghosts(client, ids, None)


def card_dataset(card: Mapping[str, Any], source: str) -> Any:
    """An MLflow dataset entity describing a dataset card: name, digest of the card, source,
    the equation table's schema and the card's sizes as its profile."""
    from mlflow.entities import Dataset

    text = json.dumps(card, sort_keys=True, default=str)
    n_operands = int(card.get("n_operands", 0))
    columns = [{"type": "long", "name": f"x{i + 1}", "required": True}
               for i in range(n_operands)]
    if columns:
        columns.append({"type": "long", "name": "label", "required": True})
    profile = {k: card[k] for k in ("n_equations", "n_classes", "vocab_size", "seq_len",
                                    "digest") if k in card}
    for seed, sizes in card.get("splits", {}).items():
        profile[f"split.seed{seed}"] = sizes
    for aug, per_seed in card.get("val_reachable", {}).items():  # mean over seeds
        if per_seed:
            profile[f"val_reachable.{aug}"] = round(float(np.mean(list(per_seed.values()))), 4)
    return Dataset(name=str(card.get("task", "dataset")),
                   digest=hashlib.sha256(text.encode()).hexdigest()[:12],
                   source_type="local", source=json.dumps({"uri": source}),
                   schema=json.dumps({"mlflow_colspec": columns}) if columns else None,
                   profile=json.dumps(profile, default=str))
