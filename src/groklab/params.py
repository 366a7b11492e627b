"""params.yaml: reading it, checking all of it, and resolving one run's configuration.

params.yaml has five parts (its comments say more):

1. the experiment's knobs (``tasks``, ``aug``, ``curriculum``, ``arch``, ``optimizer``);
2. the base run, the papers' settings (``seeds``, ``device``, ``baseline``, ``data``,
   ``model``, ``train``), which ``train.aug``/``train.curriculum``/``train.optimizer`` and
   ``model.arch`` complete by naming the paper defaults;
3. the named variants those names refer to (``augmentations``, ``curricula``,
   ``optimizers``): one registry per concept, read by the pipeline and ``groklab run``;
4. the studies (``studies``), each in one schema: ``factor``, ``values``, ``tasks``,
   ``settings`` and, optionally, ``value_settings`` (see :mod:`groklab.cells`);
5. ``analysis``: what evaluation and the report read (never training).

:func:`load_params` reads the file and checks all of it before any stage computes: every
problem is one line naming the key path, the value and what is allowed, and a missing key
is an error, never a silent default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from groklab.config import (
    DEVICES,
    MAX_SEED,
    OPTIMIZER_KINDS,
    PACING_KEYS,
    TASKS,
    AugmentConfig,
    ConfigError,
    CurriculumConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)

PARAMS_FILE = "params.yaml"
MAX_PARAMS_BYTES = 1 << 20  # params.yaml is 10 KB; a binary or a log passed by mistake is not
# The experiment's knobs and the base-run keys they set.
KNOBS = {"aug": "train.aug", "curriculum": "train.curriculum", "arch": "model.arch",
         "optimizer": "train.optimizer"}
# Base-run keys that name an entry of a registry.
NAMED = {"train.aug": "augmentations", "train.curriculum": "curricula",
         "train.optimizer": "optimizers"}
TOP_KEYS = ("tasks", "aug", "curriculum", "arch", "optimizer", "seeds", "device", "baseline",
            "data", "model", "train", "augmentations", "curricula", "optimizers", "studies",
            "analysis")
SECTION_KEYS = {
    "data": tuple(f.name for f in dataclasses.fields(DataConfig) if f.name != "task"),
    "model": tuple(f.name for f in dataclasses.fields(ModelConfig)),
    "train": ("steps", "batch_size", "eval_every", "curve_examples", "stop_after_grok",
              "matmul_precision", "measures_every", "aug", "curriculum", "optimizer"),
}
AUGMENTATION_KEYS = ("reverse", "negate")
# Keys of an optimizer variant: per kind, plus the two settings a variant may override.
OPTIMIZER_KEYS = {"adamw": ("kind", "lr", "betas", "weight_decay", "warmup"),
                  "adam": ("kind", "lr", "betas", "weight_decay", "warmup"),
                  "adam_l2": ("kind", "lr", "betas", "weight_decay", "warmup"),
                  "sgd": ("kind", "lr", "momentum", "nesterov", "weight_decay", "warmup")}
VARIANT_OVERRIDES = {"batch_size": "train.batch_size", "dropout": "model.dropout",
                     "loss": "train.loss"}
# Optional keys of any variant: the gradient interventions (groklab.gradients).
INTERVENTION_KEYS = ("grad_filter", "alpha", "lamb", "window", "orthogonal")
ANALYSIS_KEYS = ("grok_delay", "collapse_below", "min_fit_r2", "circuit_below", "cleanup_above")
# Names are data: every name that becomes part of a DVC stage name, an output path or a
# registry key (tasks, registry entries, study names, study values as text) matches this.
# Letters, digits and `_ . + -` only: no shell metacharacter, no space, no `/`; it starts
# with a letter, digit or `_`, so it is neither `.`/`..` nor taken for a command-line flag.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
SAFE_NAME_RULE = ("letters, digits and _ . + - only, starting with a letter, digit or _, "
                  "at most 64 characters")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (PyYAML would keep
    the last silently; DVC refuses the file)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is written twice in one mapping",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as a dict, with one clear line when it is missing or not YAML."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_PARAMS_BYTES:
            raise ConfigError(f"{path} is {path.stat().st_size:,} bytes, not a params file "
                              f"(at most {MAX_PARAMS_BYTES:,})")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run in the project root (where params.yaml "
                          "is) or pass its path with --params") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a params file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a text file (byte {err.start} is not UTF-8); "
                          "pass params.yaml") from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        params = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must be a mapping of keys to values, got {params!r}")
    return params


def load_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml and check all of it (:func:`check_params`); raise on any problem."""
    params = read_params(path)
    problems = check_params(params)
    if problems:
        raise ConfigError("\n".join(f"{Path(path).name}: {p}" for p in problems))
    return params


# --- Dotted keys ------------------------------------------------------------------------

def get_key(tree: Mapping[str, Any], key: str) -> Any:
    """``tree["a"]["b"]`` for ``key`` "a.b"; KeyError naming the missing part."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def nest(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``{"data.p": 23}`` -> ``{"data": {"p": 23}}``; nested mappings are merged."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = str(key).partition(".")
        if rest:
            value = nest({rest: value})
        if isinstance(value, Mapping) and isinstance(out.get(head), Mapping):
            out[head] = deep_merge(out[head], value)
        elif isinstance(value, Mapping):
            out[head] = nest(value)
        else:
            out[head] = value
    return out


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, merging nested mappings instead of replacing them."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --- Resolving a run --------------------------------------------------------------------

def run_config(params: Mapping[str, Any], task: str,
               changes: Mapping[str, Any] | None = None) -> RunConfig:
    """The base run of ``task`` with ``changes`` (dotted or nested keys) applied.

    The names ``train.aug``, ``train.curriculum`` and ``train.optimizer`` are looked up in
    their registries; an optimizer variant may also set ``batch_size``, ``dropout`` and
    ``loss``.
    """
    sections = deep_merge({k: dict(params[k]) for k in ("data", "model", "train")},
                          nest(changes or {}))
    unknown = sorted(set(sections) - {"data", "model", "train"})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; a run has data, model and train")
    for name, section in sections.items():
        extra = sorted(set(section) - set(SECTION_KEYS[name]))
        if extra:
            raise ConfigError(f"unknown key(s) {', '.join(f'{name}.{k}' for k in extra)}; "
                              f"known: {', '.join(SECTION_KEYS[name])}")
    data, model, train = sections["data"], sections["model"], sections["train"]
    aug_name, cur_name, opt_name = (train.pop(k) for k in ("aug", "curriculum", "optimizer"))
    for key, target in VARIANT_OVERRIDES.items():
        variant = _entry(params, "optimizers", opt_name)
        if key in variant:
            section, field = target.split(".")
            sections[section][field] = variant[key]
    return RunConfig(
        data=DataConfig(task=task, **data),
        model=ModelConfig(**model),
        optim=optimizer(params, opt_name),
        train=TrainConfig(**train, device=params["device"], aug=augmentation(params, aug_name),
                          curriculum=curriculum(params, cur_name)),
    )


def augmentation(params: Mapping[str, Any], name: str) -> AugmentConfig:
    """The augmentation ``name`` of the `augmentations` registry."""
    entry = _entry(params, "augmentations", name)
    return AugmentConfig(name, entry["reverse"], entry["negate"])


def curriculum(params: Mapping[str, Any], name: str) -> CurriculumConfig:
    """The schedule ``name`` of the `curricula` registry."""
    return CurriculumConfig(name=name, **_entry(params, "curricula", name))


def optimizer(params: Mapping[str, Any], name: str) -> OptimConfig:
    """The optimizer variant ``name`` of the `optimizers` registry (without the batch size
    and dropout a variant may also set: :func:`run_config` applies those)."""
    entry = _entry(params, "optimizers", name)
    return OptimConfig(name=name, **{k: v for k, v in entry.items()
                                     if k not in VARIANT_OVERRIDES})


def _entry(params: Mapping[str, Any], registry: str, name: Any) -> Mapping[str, Any]:
    entries = params[registry]
    if not isinstance(name, str) or name not in entries:
        raise ConfigError(f"{name!r} is not in `{registry}`; choose one of: "
                          f"{', '.join(entries)}")
    return entries[name]


def experiment_changes(params: Mapping[str, Any]) -> dict[str, Any]:
    """The base-run keys the experiment's knobs set."""
    return {key: params[knob] for knob, key in KNOBS.items()}


# --- Checking the whole file --------------------------------------------------------------

def is_safe_name(name: Any) -> bool:
    """Whether ``name`` (as DVC writes it into a stage name: ``str(name)``) matches
    :data:`SAFE_NAME`. Strings, numbers and null (a study of ``batch_size: null``) can;
    booleans, lists and mappings cannot."""
    if isinstance(name, bool) or not isinstance(name, str | int | float | None):
        return False
    return SAFE_NAME.fullmatch(str(name)) is not None


def check_name(where: str, name: Any) -> None:
    """Raise :class:`ConfigError` unless ``name`` is safe (:func:`is_safe_name`)."""
    if not is_safe_name(name):
        raise ConfigError(f"{where} = {shown(name)} is not a safe name: names become stage "
                          f"names and paths, so use {SAFE_NAME_RULE}")


def name_problems(params: Mapping[str, Any]) -> list[str]:
    """One line per name of ``params`` that is not safe: the tasks lists, the knobs, the
    keys of the registries and of ``studies``, and each study's tasks and values. Checked
    before anything else, so no later check (nor DVC) ever handles such a name."""
    found: list[tuple[str, Any]] = []
    for key in ("tasks", "baseline.tasks"):
        names = _lookup(params, key)
        found += [(key, v) for v in names] if isinstance(names, list) else []
    found += [(knob, params[knob]) for knob in KNOBS if isinstance(params.get(knob), str)]
    for registry in ("augmentations", "curricula", "optimizers", "studies"):
        entries = params.get(registry)
        found += [(f"{registry} key", k) for k in entries] if isinstance(entries, Mapping) else []
    studies = params.get("studies")
    for name, spec in studies.items() if isinstance(studies, Mapping) else ():
        for part in ("tasks", "values"):
            names = spec.get(part) if isinstance(spec, Mapping) else None
            found += [(f"studies.{name}.{part}", v) for v in names] \
                if isinstance(names, list) else []
    places: dict[str, list[str]] = {}  # each unsafe name once, with every place it is in
    for where, name in found:
        if not is_safe_name(name):
            places.setdefault(shown(name), []).append(where)
    problems = [f"{', '.join(dict.fromkeys(wheres))} = {name} is not a safe name: names "
                f"become stage names and paths, so use {SAFE_NAME_RULE}"
                for name, wheres in places.items()]
    # dvc.yaml lists a registry entry as the params key `<registry>.<name>`, and DVC splits
    # params keys at every dot: `optimizers.wd_0.05` would be a param DVC cannot find.
    return problems + [f"{where} = {shown(name)} has a dot: DVC reads `{where[:-4]}.{name}` "
                       f"as a nested key; use another character (e.g. wd_0p05)"
                       for where, name in found
                       if where.endswith(" key") and is_safe_name(name) and "." in str(name)]


def selector_problem(where: str, entry: Any, key: str, allowed: Any, example: str
                     ) -> str | None:
    """Why a registry ``entry`` is not a mapping whose ``key`` names one of ``allowed``
    (the key that decides which other settings it may hold); None when it is."""
    if not isinstance(entry, Mapping):
        return f"{where} = {shown(entry)}: must be a mapping with a {key}, e.g. {example}"
    value = entry.get(key)
    if not isinstance(value, str) or value not in allowed:
        return f"{where}.{key} = {shown(value)}: choose one of {', '.join(allowed)}"
    return None


def _lookup(params: Mapping[str, Any], key: str) -> Any:
    try:
        return get_key(params, key)
    except KeyError:
        return None


def shown(value: Any) -> str:
    """``value`` as one short line for an error message (strings quoted, the rest as flow YAML)."""
    return repr(value) if isinstance(value, str) else yaml.safe_dump(
        value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def key_problems(where: str, node: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()
          ) -> list[str]:
    """Missing and unknown keys of the mapping ``node`` at ``where``."""
    if not isinstance(node, Mapping):
        return [f"{where} = {shown(node)}: must be a mapping with keys {', '.join(required)}"]
    out = [f"{where}.{k} is missing (expected keys: {', '.join(required)})"
           for k in required if k not in node]
    out += [f"{where}.{k} is not a known key (known: {', '.join((*required, *optional))})"
            for k in node if k not in (*required, *optional)]
    return out


def _names(where: str, value: Any, allowed: Any, *, unique: bool = True) -> list[str]:
    """``value`` must be a non-empty list of members of ``allowed``."""
    allowed = list(allowed)
    if not isinstance(value, list) or not value:
        return [f"{where} = {shown(value)}: must be a non-empty list, e.g. [{allowed[0]}]"]
    out = [f"{where} = {shown(value)}: {v!r} is not known; choose from {', '.join(allowed)}"
           for v in value if v not in allowed]
    if unique and len(set(map(str, value))) != len(value):
        out.append(f"{where} = {shown(value)}: lists a value twice")
    return out


def check_params(params: Mapping[str, Any]) -> list[str]:
    """Every problem in ``params``, one line each (empty when all is well).

    Checks the shape of every part, then builds every run the pipeline would train — the
    base run of each task, the experiment, each study cell — so a value that is out of range
    in any of them is reported here, before anything computes.
    """
    problems = name_problems(params)  # first: such a name goes no further
    if problems:
        return problems
    problems = key_problems("params", params, TOP_KEYS)
    if problems:
        return [p.replace("params.", "", 1) for p in problems]
    problems += key_problems("baseline", params["baseline"], ("tasks",))
    for name, keys in SECTION_KEYS.items():
        problems += key_problems(name, params[name], keys)
    problems += _check_registries(params)
    problems += _check_analysis(params["analysis"])
    # Values that building the runs does not need: checked, and the runs built regardless.
    values = _names("tasks", params["tasks"], TASKS)
    seeds = params["seeds"]
    if (not isinstance(seeds, list) or not seeds
            or not all(_is_int(s) and 0 <= s <= MAX_SEED for s in seeds)
            or len(set(seeds)) != len(seeds)):
        values.append(f"seeds = {shown(seeds)}: must be a non-empty list of distinct "
                      f"integers from 0 to {MAX_SEED}, e.g. [0, 1, 2]")
    if params["device"] not in DEVICES:
        values.append(f"device = {shown(params['device'])}: choose one of {', '.join(DEVICES)}")
    if not problems:
        problems += _names("baseline.tasks", params["baseline"]["tasks"], TASKS)
    if problems:  # the runs below need well-formed sections, registries and base tasks
        return problems + values
    problems += values
    for knob, key in KNOBS.items():
        registry = NAMED.get(key)
        if registry and params[knob] not in params[registry]:
            problems.append(f"{knob} = {shown(params[knob])}: not in `{registry}`; choose one "
                            f"of {', '.join(params[registry])}")
    return problems + _check_runs(params)


def _check_registries(params: Mapping[str, Any]) -> list[str]:
    problems = []
    for registry in ("augmentations", "curricula", "optimizers"):
        if not isinstance(params[registry], Mapping) or not params[registry]:
            problems.append(f"{registry} = {shown(params[registry])}: must map names to settings")
    if problems:
        return problems
    for name, entry in params["augmentations"].items():
        where = f"augmentations.{name}"
        problems += key_problems(where, entry, AUGMENTATION_KEYS)
        if not problems:
            problems += build_problems(where, lambda e=entry, n=name: AugmentConfig(
                n, e["reverse"], e["negate"]))
    for name, entry in params["curricula"].items():
        where = f"curricula.{name}"
        if bad := selector_problem(where, entry, "pacing", PACING_KEYS, "{pacing: none}"):
            problems.append(bad)
            continue
        problems += key_problems(where, entry, ("pacing", *PACING_KEYS[entry["pacing"]]))
        problems += build_problems(where, lambda e=entry, n=name: CurriculumConfig(name=n, **e))
    for name, entry in params["optimizers"].items():
        where = f"optimizers.{name}"
        if bad := selector_problem(where, entry, "kind", OPTIMIZER_KINDS,
                                   "{kind: adamw, ...}"):
            problems.append(bad)
            continue
        kind = entry["kind"]
        problems += key_problems(where, entry, OPTIMIZER_KEYS[kind],
                                 (*INTERVENTION_KEYS, *VARIANT_OVERRIDES))
        core = {k: v for k, v in entry.items() if k not in VARIANT_OVERRIDES}
        problems += build_problems(where, lambda c=core, n=name: OptimConfig(name=n, **c))
    return problems


def _check_analysis(analysis: Any) -> list[str]:
    problems = key_problems("analysis", analysis, ANALYSIS_KEYS)
    if problems:
        return problems
    if not (_is_int(analysis["grok_delay"]) and analysis["grok_delay"] >= 0):
        problems.append(f"analysis.grok_delay = {shown(analysis['grok_delay'])}: must be an "
                        "integer >= 0 (updates between training and validation reaching 99%)")
    for key in ("collapse_below", "min_fit_r2"):
        v = analysis[key]
        if not (isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1):
            problems.append(f"analysis.{key} = {shown(v)}: must be a number in (0, 1)")
    for key in ("circuit_below", "cleanup_above"):  # nats (groklab.mechanism)
        v = analysis[key]
        if not (isinstance(v, int | float) and not isinstance(v, bool) and v > 0):
            problems.append(f"analysis.{key} = {shown(v)}: must be a number of nats > 0")
    return problems


def build_problems(where: str, build: Any) -> list[str]:
    """The problem building a config raised, as one line (empty when it built)."""
    try:
        build()
    except ConfigError as err:
        return [f"{where}: {err}"]
    except (TypeError, AttributeError) as err:  # an unknown key, a value of the wrong type
        return [f"{where}: {err}"]
    return []


def _check_runs(params: Mapping[str, Any]) -> list[str]:
    """Build every run: base runs, the experiment, study cells; no two trained alike."""
    from groklab.cells import duplicate_runs, study_problems  # cells reads this module

    problems = []
    for task in params["baseline"]["tasks"]:
        problems += build_problems(f"base run ({task})", lambda t=task: run_config(params, t))
    changes = experiment_changes(params)
    for task in [t for t in params["tasks"] if t in TASKS]:  # others: reported already
        problems += build_problems(f"experiment ({task}; knobs "
                           f"{', '.join(f'{k}={params[k]}' for k in KNOBS)})",
                           lambda t=task: run_config(params, t, changes))
    problems += study_problems(params)
    return problems or duplicate_runs(params)
