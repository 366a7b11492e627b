"""Run configurations from ``params.yaml``: the experiment's knobs and the studies' cells.

A study varies one factor; every other factor stays at the paper default (baseline,
none, transformer, adamw), so turning an experiment knob never changes a study's cells.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from groklab.config import ConfigError, RunConfig
from groklab.presets import apply_variant

PAPER_DEFAULTS = {"aug": "baseline", "curriculum": "none", "arch": "transformer",
                  "optimizer": "adamw"}


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f)


def _section(params: dict[str, Any], key: str) -> dict[str, Any]:
    if key not in params:
        raise ConfigError(f"params.yaml has no `{key}` section")
    return dict(params[key] or {})


def run_config(params: dict[str, Any], task: str, *, aug: str, curriculum: str, arch: str,
               optimizer: str, **sections: dict[str, Any]) -> RunConfig:
    """The shared settings of ``params`` for ``task`` with the four factors set explicitly.

    ``sections`` are extra overrides applied last, e.g. ``data={"train_fraction": 0.3}``.
    """
    cfg = RunConfig().replace(
        data={**_section(params, "data"), "task": task},
        model={**_section(params, "model"), "arch": arch},
        train={**_section(params, "train"), "aug": aug, "device": params.get("device", "auto"),
               "curriculum": {**_section(params, "curricula"), "name": curriculum}},
    )
    cfg = apply_variant(cfg, optimizer, _section(params, "optimizers"))
    return cfg.replace(**sections) if sections else cfg


def experiment_config(params: dict[str, Any], task: str) -> RunConfig:
    """The experiment: the shared settings with the knobs ``aug``, ``curriculum``, ..."""
    knobs = {k: params.get(k, v) for k, v in PAPER_DEFAULTS.items()}
    return run_config(params, task, **knobs)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, merging nested mappings instead of replacing them."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Study:
    """A grid over tasks and one factor.

    ``apply(value, spec)`` maps a factor value to config changes: factor overrides
    (``aug``, ``curriculum``, ``arch``, ``optimizer``) and/or section overrides
    (``{"data": {...}}``). A study's ``settings`` in params.yaml apply to all its cells.
    """

    name: str
    factor: str  # name of the varied factor in cells and tables
    values_key: str  # key under studies.<name> listing the factor's values
    apply: Callable[[Any, dict[str, Any]], dict[str, Any]]

    def spec(self, params: dict[str, Any]) -> dict[str, Any]:
        studies = params.get("studies") or {}
        if self.name not in studies:
            raise ConfigError(f"params.yaml has no `studies.{self.name}` section")
        return studies[self.name]

    def values(self, params: dict[str, Any]) -> list[Any]:
        return list(self.spec(params)[self.values_key])

    def cells(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every (task, value) cell, in DVC's matrix order."""
        return [{"task": t, self.factor: v}
                for t, v in itertools.product(self.spec(params)["tasks"], self.values(params))]

    def config(self, params: dict[str, Any], cell: dict[str, Any]) -> RunConfig:
        spec = self.spec(params)
        value = _typed(cell[self.factor], self.values(params))
        changes = deep_merge(spec.get("settings") or {}, self.apply(value, spec))
        factors = {k: changes.pop(k, v) for k, v in PAPER_DEFAULTS.items()}
        return run_config(params, cell["task"], **factors, **changes)


def _typed(value: Any, values: list[Any]) -> Any:
    """The factor value as params.yaml types it (the command line passes strings)."""
    for v in values:
        if str(v) == str(value):
            return v
    raise ConfigError(f"{value!r} is not one of this study's values: {values}")


def _fraction(value: float, spec: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"train_fraction": value}
    p = (spec.get("p_by_fraction") or {}).get(value)  # seed 002's no-grok case: p=113 at 0.05
    if p is not None:
        data["p"] = p
    return {"data": data}


STUDIES: dict[str, Study] = {s.name: s for s in [
    Study("augmentation", "aug", "augs", lambda v, _: {"aug": v}),
    Study("curriculum", "curriculum", "schedules", lambda v, _: {"curriculum": v}),
    Study("architecture", "arch", "archs", lambda v, _: {"arch": v}),
    Study("optimizer", "optimizer", "variants", lambda v, _: {"optimizer": v}),
    Study("data_fraction", "train_fraction", "fractions", _fraction),
    Study("batch_size", "batch_size", "sizes", lambda v, _: {"train": {"batch_size": v}}),
    Study("multivariate", "operands", "operands", lambda v, _: {"data": {"operands": v}}),
    Study("concealment", "concealed_bits", "concealed_bits",
          lambda v, _: {"data": {"concealed_bits": v}}),
]}


def cell_name(cell: dict[str, Any]) -> str:
    """The cell's directory and DVC matrix suffix: its values joined by '-'."""
    return "-".join(str(v) for v in cell.values())


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise ConfigError(f"study {name!r} is not known; choose one of: {', '.join(STUDIES)}")
    return STUDIES[name]
