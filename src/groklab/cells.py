"""The runs the pipeline trains: base runs, the experiment, and each study's cells.

A **study** is declared once, under ``studies:`` in params.yaml, in one schema::

    data_fraction:
      factor: data.train_fraction    # a dotted key of the run's configuration
      values: [0.05, 0.1, 0.3]       # one cell per task and value
      tasks: [x_plus_y]
      settings: {}                   # fixed for every cell of the study (nested keys)
      value_settings: {0.05: {data: {p: 113}}}   # extra settings of single values ({}: none)

A value whose run would equal a base run (``baseline@<task>``, the paper defaults) is not
listed: the study reads the base run in its place (:meth:`Study.rows`), so each distinct
run is trained once. The linear student-teacher study is a study like the others: its task
``linear_regression`` runs :mod:`groklab.linear_teacher` instead of a network.

Each cell is one DVC stage ``<family>@<task>[-<value>]`` writing ``models/<family>/<name>``;
``family`` is ``baseline``, ``experiment`` or the study's name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groklab.config import TASKS, ConfigError, LinearTeacherConfig, RunConfig
from groklab.params import (
    SECTION_KEYS,
    build_problems,
    deep_merge,
    experiment_changes,
    get_key,
    key_problems,
    nest,
    run_config,
    shown,
)

BASELINE, EXPERIMENT = "baseline", "experiment"
STUDY_KEYS = ("factor", "values", "tasks", "settings", "value_settings")
# Tasks that are not networks, and the kind of run each is.
LINEAR_TASK = "linear_regression"
LINEAR_SETTINGS = tuple(f.name for f in dataclasses.fields(LinearTeacherConfig)
                        if f.name != "seed")

CellConfig = RunConfig | LinearTeacherConfig


@dataclass(frozen=True)
class Cell:
    """One trained (or, for the experiment, possibly borrowed) run of every seed."""

    family: str  # "baseline", "experiment" or a study name
    task: str
    value: Any = None  # the study factor's value; None for base runs and the experiment

    @property
    def name(self) -> str:
        """The matrix suffix DVC gives the stage, and the output folder's name."""
        return self.task if self.value is None else f"{self.task}-{self.value}"

    @property
    def stage(self) -> str:
        return f"{self.family}@{self.name}"

    def path(self, models: Path | str = "models") -> Path:
        return Path(models) / self.family / self.name


@dataclass(frozen=True)
class Study:
    """A grid over tasks and one factor of the run (see the module docstring)."""

    name: str
    factor: str
    values: tuple[Any, ...]
    tasks: tuple[str, ...]
    settings: Mapping[str, Any]
    value_settings: Mapping[Any, Mapping[str, Any]]

    @classmethod
    def from_params(cls, params: Mapping[str, Any], name: str) -> Study:
        spec = params["studies"][name]
        return cls(name, spec["factor"], tuple(spec["values"]), tuple(spec["tasks"]),
                   spec["settings"] or {}, spec["value_settings"] or {})

    @property
    def linear(self) -> bool:
        """Whether the study runs the linear student-teacher model (no network)."""
        return self.tasks == (LINEAR_TASK,)

    def cells(self) -> list[Cell]:
        """Every (task, value) cell, in DVC's matrix order."""
        return [Cell(self.name, t, v) for t in self.tasks for v in self.values]

    def value_of(self, text: str) -> Any:
        """The value as params.yaml types it (DVC passes it as text)."""
        for v in self.values:
            if str(v) == str(text):
                return v
        raise ConfigError(f"{text!r} is not one of studies.{self.name}.values: "
                          f"{', '.join(map(str, self.values))}")

    def config(self, params: Mapping[str, Any], task: str, value: Any) -> CellConfig:
        return study_config(params, self.name, task, value)

    def default_value(self, params: Mapping[str, Any]) -> Any:
        """The factor's value in the base run (None for the linear study)."""
        return None if self.linear else get_key(params, self.factor)

    def rows(self, params: Mapping[str, Any]) -> list[tuple[Cell, Cell]]:
        """``(cell, source)`` for every row of the study's tables, in params order.

        The base run of a task stands in for the study's default value when the study's
        cell would be exactly that run; ``cell`` then carries the default value and
        ``source`` is ``baseline@<task>``. Every other row is its own source.
        """
        out = []
        default = self.default_value(params)
        numeric = all(isinstance(v, int | float) for v in (*self.values, default))
        for task in self.tasks:
            rows = [(c, c) for c in self.cells() if c.task == task]
            if (default is not None and default not in self.values
                    and task in params[BASELINE]["tasks"]
                    and self.config(params, task, default) == run_config(params, task)):
                rows.insert(0, (Cell(self.name, task, default), Cell(BASELINE, task)))
            out += sorted(rows, key=lambda r: r[0].value) if numeric else rows
        return out


def study_config(params: Mapping[str, Any], study: str, task: str, value: Any) -> CellConfig:
    """The run of one study cell. Reads only what that run depends on — the study's
    ``factor``, ``settings`` and ``value_settings``, and what :func:`run_config` reads — so
    the study's DVC stages can list exactly those params."""
    spec = params["studies"][study]
    settings, factor = spec["settings"] or {}, spec["factor"]
    extra = (spec["value_settings"] or {}).get(value) or {}
    if task == LINEAR_TASK:
        return LinearTeacherConfig(**{**settings, factor: value, **extra})
    changes = deep_merge(nest(settings), nest({factor: value}))
    return run_config(params, task, deep_merge(changes, nest(extra)))


def studies(params: Mapping[str, Any]) -> dict[str, Study]:
    """Every study of params.yaml, in its order."""
    return {name: Study.from_params(params, name) for name in params["studies"]}


def baseline_cells(params: Mapping[str, Any]) -> list[Cell]:
    return [Cell(BASELINE, t) for t in params[BASELINE]["tasks"]]


def experiment_cells(params: Mapping[str, Any]) -> list[Cell]:
    return [Cell(EXPERIMENT, t) for t in params["tasks"]]


def trained_cells(params: Mapping[str, Any]) -> list[Cell]:
    """Every cell a `dvc repro` trains (the experiment borrows, see :func:`experiment_source`)."""
    out = baseline_cells(params)
    for study in studies(params).values():
        out += study.cells()
    return out


def cell_config(params: Mapping[str, Any], cell: Cell) -> CellConfig:
    """The configuration ``cell`` trains (for every seed in ``params["seeds"]``)."""
    if cell.family == BASELINE:
        return run_config(params, cell.task)
    if cell.family == EXPERIMENT:
        return run_config(params, cell.task, experiment_changes(params))
    return study_config(params, cell.family, cell.task, cell.value)


def experiment_source(params: Mapping[str, Any], task: str) -> Cell | None:
    """The base run the experiment equals at its current knobs, if any (else it trains)."""
    if task in params[BASELINE]["tasks"] and \
            cell_config(params, Cell(EXPERIMENT, task)) == run_config(params, task):
        return Cell(BASELINE, task)
    return None


def parse_cell(params: Mapping[str, Any], family: str, task: str,
               value: str | None = None) -> Cell:
    """The cell a stage's command line names, checked against params.yaml."""
    if family in (BASELINE, EXPERIMENT):
        tasks = params[BASELINE]["tasks"] if family == BASELINE else params["tasks"]
        key = f"{family}.tasks" if family == BASELINE else "tasks"
        if value is not None or task not in tasks:
            raise ConfigError(f"{family}@{task}{'-' + value if value else ''} is not a cell: "
                              f"{key} lists {', '.join(tasks)}")
        return Cell(family, task)
    all_studies = studies(params)
    if family not in all_studies:
        raise ConfigError(f"{family!r} is not a study; studies: {', '.join(all_studies)} "
                          f"(or {BASELINE}, {EXPERIMENT})")
    study = all_studies[family]
    if task not in study.tasks:
        raise ConfigError(f"{task!r} is not one of studies.{family}.tasks: "
                          f"{', '.join(study.tasks)}")
    if value is None:
        raise ConfigError(f"a cell of studies.{family} needs a value of {study.factor}")
    return Cell(family, task, study.value_of(value))


def stage_cell(params: Mapping[str, Any], stage: str) -> Cell:
    """The cell of the DVC stage named ``stage`` (``DVC_STAGE``, e.g.
    ``augmentation@x_plus_y-negation``), checked against params.yaml.

    dvc.yaml's commands name no cell: a stage reads its own name from DVC instead, so no
    name from params.yaml is ever part of a line a shell runs. Tasks hold no ``-``, so the
    first ``-`` after a study's task starts the value. DVC prefixes the name of a stage of a
    dvc.yaml outside the repo root with that file's path and a colon.
    """
    family, at, name = stage.rpartition("dvc.yaml:")[2].partition("@")
    if not at:
        raise ConfigError(f"DVC_STAGE={stage!r} is not a cell's stage (<family>@<name>)")
    if family in (BASELINE, EXPERIMENT) or family not in params["studies"]:
        return parse_cell(params, family, name)
    study = Study.from_params(params, family)
    for task in study.tasks:
        if name.startswith(f"{task}-"):
            return parse_cell(params, family, task, name[len(task) + 1:])
    raise ConfigError(f"DVC_STAGE={stage!r}: {name!r} starts with none of "
                      f"studies.{family}.tasks: {', '.join(study.tasks)}")


def config_key(config: CellConfig, seeds: list[int]) -> str:
    """A run's identity: its whole configuration and seeds, as canonical JSON."""
    return json.dumps({"kind": type(config).__name__, "config": dataclasses.asdict(config),
                       "seeds": sorted(seeds)}, sort_keys=True, default=str)


# --- Checks (called by groklab.params.check_params) -------------------------------------

def study_problems(params: Mapping[str, Any]) -> list[str]:
    """Shape of each study, and every cell built: one line per problem."""
    if not isinstance(params["studies"], Mapping):
        return [f"studies = {shown(params['studies'])}: must map study names to studies"]
    problems = []
    for name, spec in params["studies"].items():
        where = f"studies.{name}"
        if name in (BASELINE, EXPERIMENT):
            problems.append(f"{where}: `{name}` names a stage family; choose another name")
        shape = key_problems(where, spec, STUDY_KEYS)
        if shape:
            problems += shape
            continue
        tasks = spec["tasks"]
        if tasks == [LINEAR_TASK]:
            problems += _linear_problems(where, spec)
            continue
        if not isinstance(tasks, list) or not tasks or any(t not in TASKS for t in tasks):
            problems.append(f"{where}.tasks = {shown(tasks)}: choose from {', '.join(TASKS)}, "
                            f"or [{LINEAR_TASK}] alone for the linear student-teacher model")
            continue
        keys = [f"{s}.{k}" for s, ks in SECTION_KEYS.items() for k in ks]
        if spec["factor"] not in keys:
            problems.append(f"{where}.factor = {shown(spec['factor'])}: must be a key of the run, "
                            f"one of {', '.join(keys)}")
            continue
        problems += _values_problems(where, spec)
        if problems:
            continue
        study = Study.from_params(params, name)
        for cell in study.cells():
            at = f"{where} ({cell.task}, {study.factor} = {shown(cell.value)})"
            problems += build_problems(at, lambda c=cell, st=study: st.config(params, c.task,
                                                                              c.value))
    return problems


def _values_problems(where: str, spec: Mapping[str, Any]) -> list[str]:
    values = spec["values"]
    if not isinstance(values, list) or not values:
        return [f"{where}.values = {shown(values)}: must be a non-empty list"]
    if len({str(v) for v in values}) != len(values):
        return [f"{where}.values = {shown(values)}: lists a value twice"]
    if not isinstance(spec["settings"], Mapping):
        return [f"{where}.settings = {shown(spec['settings'])}: must be a mapping ({{}}: none)"]
    if not isinstance(spec["value_settings"], Mapping):
        return [f"{where}.value_settings = {shown(spec['value_settings'])}: must map values to "
                "settings ({}: none)"]
    extra = [v for v in spec["value_settings"] if v not in values]
    if extra:
        return [f"{where}.value_settings names {shown(extra)}, which `values` does not list"]
    return []


def _linear_problems(where: str, spec: Mapping[str, Any]) -> list[str]:
    if spec["factor"] not in LINEAR_SETTINGS:
        return [f"{where}.factor = {shown(spec['factor'])}: must be a setting of the linear "
                f"model, one of {', '.join(LINEAR_SETTINGS)}"]
    problems = _values_problems(where, spec)
    wanted = tuple(k for k in LINEAR_SETTINGS if k != spec["factor"])
    problems += key_problems(f"{where}.settings", spec["settings"], wanted)
    if problems:
        return problems
    for value in spec["values"]:
        try:
            LinearTeacherConfig(**{**spec["settings"], spec["factor"]: value,
                                   **(spec["value_settings"].get(value) or {})})
        except (TypeError, ValueError) as err:
            problems.append(f"{where} ({spec['factor']} = {shown(value)}): {err}")
    return problems


def duplicate_runs(params: Mapping[str, Any]) -> list[str]:
    """Cells that would train exactly the same run as another (each is trained once)."""
    seen: dict[str, Cell] = {}
    problems = []
    for cell in trained_cells(params):
        key = config_key(cell_config(params, cell), [])  # every cell trains the same seeds
        if key not in seen:
            seen[key] = cell
            continue
        first = seen[key]
        if first.family == BASELINE and cell.family != BASELINE:
            problems.append(
                f"studies.{cell.family}.values lists {shown(cell.value)}, whose run on "
                f"{cell.task} is the base run {first.stage}: leave it out (the study reads "
                f"{first.stage} in its place)")
        else:
            problems.append(f"{cell.stage} would train the same run as {first.stage}; "
                            "keep one of them")
    return problems
