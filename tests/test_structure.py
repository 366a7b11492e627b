"""A study is declared once: params.yaml, dvc.yaml, evaluate and the report agree, and every
training stage declares exactly the params its run reads (so DVC retrains what changed)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from groklab.cells import EXPERIMENT, Cell, cell_config, experiment_source, studies
from groklab.params import load_params
from groklab.report.sections import SECTIONS
from groklab.stages.evaluate import families

ROOT = Path(__file__).resolve().parents[1]
FIXED_STAGES = {"generate", "baseline", "experiment", "evaluate", "report"}


def declaration_problems(root: Path, sectioned: set[str | None] | None = None) -> list[str]:
    """Where params.yaml's studies, dvc.yaml's stage families, evaluate's outputs and the
    report's sections (``sectioned``: their studies, default this checkout's) disagree, one
    line each naming the study and what is missing."""
    params = load_params(root / "params.yaml")
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    declared = list(studies(params))
    problems = []
    for name in declared:
        stage = dvc.get(name)
        if stage is None:
            problems.append(f"study {name!r} has no stage block `{name}:` in dvc.yaml")
            continue
        want = {"cmd": "python -m groklab.stages.train",  # the cell: DVC_STAGE
                "matrix": {"task": f"${{studies.{name}.tasks}}",
                           "value": f"${{studies.{name}.values}}"},
                # results committed to git; a network's checkpoints in DVC's cache
                "outs": [{f"models/{name}/${{item.task}}-${{item.value}}": {"cache": False}},
                         *([] if studies(params)[name].linear else
                           [f"checkpoints/{name}/${{item.task}}-${{item.value}}"])]}
        for key, value in want.items():
            if stage.get(key) != value:
                problems.append(f"dvc.yaml stage `{name}`: {key} must be {value!r}")
        for key in ("factor", "settings", "value_settings"):
            if f"studies.{name}.{key}" not in stage.get("params", []):
                problems.append(f"dvc.yaml stage `{name}` must list param studies.{name}.{key}")
    problems += [f"dvc.yaml stage `{name}`: its cmd interpolates {stage['cmd']!r}; a shell "
                 "would read the value (names are data: the stage reads DVC_STAGE)"
                 for name, stage in dvc.items() if "$" in stage.get("cmd", "")]
    for name in set(dvc) - FIXED_STAGES - set(declared):
        problems.append(f"dvc.yaml stage `{name}` is not a study in params.yaml")
    evaluated = set(families(params)) - {"baseline", EXPERIMENT}
    problems += [f"evaluate writes no tables or metrics for study {name!r}"
                 for name in declared if name not in evaluated]
    sectioned = {s.study for s in SECTIONS} if sectioned is None else sectioned
    problems += [f"the report has no section for study {name!r}"
                 for name in declared if name not in sectioned]
    problems += [f"the report has a section for {name!r}, which params.yaml does not declare"
                 for name in sectioned - set(declared) - {None, EXPERIMENT}]
    return problems


def test_studies_dvc_stages_evaluate_and_report_agree():
    assert declaration_problems(ROOT) == []


def test_a_half_added_study_is_named(tmp_path):
    for name in ("params.yaml", "dvc.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["studies"]["encoding"] = {"factor": "data.encoding", "values": ["compact"],
                                     "tasks": ["x_plus_y"], "settings": {},
                                     "value_settings": {}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    problems = declaration_problems(tmp_path)
    assert "study 'encoding' has no stage block `encoding:` in dvc.yaml" in problems
    assert "the report has no section for study 'encoding'" in problems


# --- Each stage declares what its run reads -------------------------------------------------

class Recorder(Mapping):
    """A read-only view of params that records the dotted keys a computation reads.

    Reading a value (not a mapping) records its key; iterating, copying or sizing a mapping
    records the mapping's key (all of it was read); a membership test reads nothing.
    """

    def __init__(self, tree: Mapping[str, Any], reads: set[str], prefix: str = ""):
        self._tree, self._reads, self._prefix = tree, reads, prefix

    def _key(self, key: Any) -> str:
        return f"{self._prefix}{key}"

    def __getitem__(self, key: Any) -> Any:
        value = self._tree[key]
        if isinstance(value, Mapping):
            return Recorder(value, self._reads, f"{self._key(key)}.")
        self._reads.add(self._key(key))
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._tree

    def _read_all(self) -> None:
        self._reads.add(self._prefix.rstrip(".") or "<all>")

    def __iter__(self) -> Iterator[Any]:
        self._read_all()
        return iter(self._tree)

    def __len__(self) -> int:
        self._read_all()
        return len(self._tree)


def reads_of(params: dict[str, Any], cell: Cell) -> set[str]:
    """The params keys that determine ``cell``'s run."""
    reads: set[str] = set()
    view = Recorder(params, reads)
    cell_config(view, cell)
    if cell.family == EXPERIMENT:
        experiment_source(view, cell.task)
    view["seeds"]  # noqa: B018 - every run is trained for every seed
    return reads


def covered(key: str, declared: list[str]) -> bool:
    return any(key == d or key.startswith(f"{d}.") for d in declared)


def resolved_stages() -> list[tuple[str, list[str]]]:
    """Every training stage of dvc.yaml as DVC resolves it, with its params keys."""
    from dvc.repo import Repo

    out = []
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            family = stage.addressing.split("@")[0]
            if family in FIXED_STAGES - {"baseline", "experiment"}:
                continue
            keys = [k for d in stage.deps if type(d).__name__ == "ParamsDependency"
                    for k in d.params]
            out.append((stage.addressing, keys))
    return out


def _cell(params: dict[str, Any], addressing: str) -> Cell:
    family, _, name = addressing.partition("@")
    if family in ("baseline", EXPERIMENT):
        return Cell(family, name)
    study = studies(params)[family]
    task = next(t for t in study.tasks if name.startswith(f"{t}-"))
    return Cell(family, task, study.value_of(name[len(task) + 1:]))


def resolves(params: dict[str, Any], key: str) -> bool:
    """Whether DVC finds ``key`` in params.yaml: it splits the key at every dot, so a
    registry name with a dot in it (``wd_0.05``) is a key DVC reports missing at run time."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_training_stage_declares_exactly_the_params_its_run_reads():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = resolved_stages()
    assert len(stages) == len(params["baseline"]["tasks"]) + len(params["tasks"]) + sum(
        len(s.cells()) for s in studies(params).values())
    for addressing, declared in stages:
        reads = reads_of(params, _cell(params, addressing))
        missing = sorted(k for k in reads if not covered(k, declared))
        unused = sorted(d for d in declared if not any(covered(k, [d]) or d.startswith(f"{k}.")
                                                       for k in reads))
        assert not missing, f"{addressing} reads {missing} but dvc.yaml does not list them"
        assert not unused, f"{addressing} lists {unused} in dvc.yaml but its run never reads them"
        unresolved = [k for k in declared if not resolves(raw, k)]
        assert not unresolved, f"{addressing}: DVC cannot find {unresolved} in params.yaml"
