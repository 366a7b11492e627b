"""params.yaml: the papers' settings, resolved runs, and one clear line per bad input."""

from __future__ import annotations

import copy
import re

import pytest
from registry import PARAMS, ROOT

from groklab.cells import (
    BASELINE,
    Cell,
    cell_config,
    experiment_source,
    stage_cell,
    studies,
    trained_cells,
)
from groklab.config import AugmentConfig, ConfigError, RunConfig
from groklab.params import (
    check_params,
    get_key,
    is_safe_name,
    load_params,
    read_params,
    run_config,
)


def test_the_base_run_is_the_papers_base_configuration():
    """DESIGN.md's base configuration, written out: p=97, fraction 0.5, 2x128x4 Transformer,
    AdamW 1e-3 (0.9, 0.98) wd 0.5 with 50 warm-up updates, batch 512, 7500 updates."""
    cfg = run_config(PARAMS, "x_plus_y")
    assert (cfg.data.p, cfg.data.train_fraction, cfg.data.encoding) == (97, 0.5, "full")
    assert (cfg.model.arch, cfg.model.layers, cfg.model.width, cfg.model.heads) == (
        "transformer", 2, 128, 4)
    o = cfg.optim
    assert (o.kind, o.lr, o.betas, o.weight_decay, o.warmup) == ("adamw", 1e-3, (0.9, 0.98),
                                                                  0.5, 50)
    t = cfg.train
    assert (t.batch_size, t.steps, t.eval_every, t.stop_after_grok) == (512, 7500, 10, None)
    assert t.aug == AugmentConfig("baseline", 0.0, 0.0) and t.curriculum.pacing == "none"
    assert PARAMS["seeds"] == [0, 1, 2]
    assert cfg == RunConfig(), "the library's defaults drifted from params.yaml"


def test_at_paper_defaults_the_experiment_is_the_base_run():
    assert experiment_source(PARAMS, "x_plus_y") == Cell(BASELINE, "x_plus_y")
    knob = {**PARAMS, "aug": "combined30"}
    assert experiment_source(knob, "x_plus_y") is None
    assert cell_config(knob, Cell("experiment", "x_plus_y")).train.aug.p_negate == 0.3


def test_each_distinct_run_is_trained_once():
    keys = [cell_config(PARAMS, c) for c in trained_cells(PARAMS)]
    assert len(keys) == len({repr(k) for k in keys}) == 82  # 74 + mechanism + 7 accelerators


def test_study_rows_read_the_base_run_for_the_default_value():
    rows = studies(PARAMS)["augmentation"].rows(PARAMS)
    by_task = [(c.value, src.stage) for c, src in rows if c.task == "x_div_y"]
    assert by_task == [("baseline", "baseline@x_div_y"),
                       ("reversal", "augmentation@x_div_y-reversal"),
                       ("negation", "augmentation@x_div_y-negation"),
                       ("combined15", "augmentation@x_div_y-combined15"),
                       ("combined30", "augmentation@x_div_y-combined30")]
    fractions = [c.value for c, _ in studies(PARAMS)["data_fraction"].rows(PARAMS)]
    assert fractions == [0.05, 0.1, 0.3, 0.45, 0.5, 0.6, 0.8]  # numbers in order
    conceal = studies(PARAMS)["concealment"].rows(PARAMS)
    assert all(c == src for c, src in conceal)  # parity has no base run to borrow
    assert cell_config(PARAMS, Cell("data_fraction", "x_plus_y", 0.05)).data.p == 113


def bad(edit) -> list[str]:
    params = copy.deepcopy(PARAMS)
    edit(params)
    return check_params(params)


def _del(section: str, key: str):
    return lambda p: p[section].pop(key)


def _set(path: str, value):
    def edit(p):
        *head, last = path.split(".")
        node = p
        for part in head:
            node = node[part]
        node[last] = value
    return edit


@pytest.mark.parametrize("edit, words", [
    (_set("tasks", ["nope"]), ["tasks", "'nope' is not known", "x_plus_y"]),
    (_set("seeds", [-1]), ["seeds = [-1]", "integers from 0 to 4294967295"]),
    (_set("seeds", []), ["seeds = []", "non-empty"]),
    (_set("seeds", [0, 0]), ["seeds = [0, 0]", "distinct"]),
    (_set("seeds", "0"), ["seeds = '0'"]),
    (_del("train", "batch_size"), ["train.batch_size is missing"]),
    (_del("train", "steps"), ["train.steps is missing"]),
    (_del("data", "p"), ["data.p is missing"]),
    (_set("train.stepz", 3), ["train.stepz is not a known key"]),
    (_set("aug", "rotation"), ["aug = 'rotation'", "augmentations", "combined30"]),
    (_set("device", "tpu"), ["device = 'tpu'", "cuda"]),
    (_set("data.p", 96), ["p=96", "prime"]),
    (_set("train.steps", 0), ["steps=0", "positive"]),
    (_set("train.matmul_precision", "tf32"), ["matmul_precision='tf32'", "highest, high"]),
    (_set("augmentations.flip", {"reverse": 1.5, "negate": 0.0}), ["augmentations.flip",
                                                                   "reverse=1.5"]),
    (_set("curricula.fast", {"pacing": "linear", "order": "easiest_first", "start": 0.2}),
     ["curricula.fast.ramp is missing"]),
    (_set("optimizers.adamw.momentum", 0.9), ["optimizers.adamw.momentum is not a known key"]),
    (_set("studies.augmentation.values", ["baseline", "negation"]),
     ["studies.augmentation.values lists 'baseline'", "baseline@x_plus_y", "leave it out"]),
    (_set("studies.batch_size.factor", "train.batchsize"), ["studies.batch_size.factor",
                                                            "train.batch_size"]),
    (_set("studies.linear_teacher.values", [0.5, 1.2]), ["studies.linear_teacher",
                                                         "lam=1.2", "(0, 1)"]),
    (_set("studies.architecture.values", ["mlp", "gru"]), ["studies.architecture",
                                                           "arch='gru'", "transformer"]),
    (_set("studies.data_fraction.value_settings", {0.7: {"data": {"p": 113}}}),
     ["value_settings names [0.7]"]),
    (_set("analysis.grok_delay", -1), ["analysis.grok_delay = -1", ">= 0"]),
    (_set("analysis.circuit_below", 0), ["analysis.circuit_below = 0", "nats > 0"]),
    (_set("train.measures_every", -1), ["measures_every=-1", "integer >= 0"]),
    (_set("studies.architecture.values", ["mlp", "bit_mlp"]),
     ["studies.architecture (x_div_y, model.arch = 'bit_mlp')", "binary vectors"]),
    # Non-finite numbers and wrong types inside the registries: one line, no traceback.
    (_set("optimizers.adamw.lr", float("nan")), ["optimizers.adamw: lr=nan", "finite"]),
    (_set("optimizers.adamw.lr", float("inf")), ["optimizers.adamw: lr=inf", "finite"]),
    (_set("optimizers.adamw.weight_decay", float("nan")), ["weight_decay=nan"]),
    (_set("curricula.none", [1]), ["curricula.none = [1]: must be a mapping"]),
    (_set("curricula.none.pacing", ["none"]), ["curricula.none.pacing = [none]: choose"]),
    (_set("optimizers.adamw", "fast"), ["optimizers.adamw = 'fast': must be a mapping"]),
    (_set("optimizers.adamw.betas", 0.9), ["betas=0.9 must be two numbers"]),
    (_set("model.layers", 100000), ["layers=100000 is more than 128"]),
    (_set("studies.linear_teacher.settings.d_in", 1e9), ["d_in=1000000000.0", "integer"]),
    (_set("studies.multivariate.values", [6]), ["operands=6 at p=23", "23^6 equations"]),
])
def test_a_bad_value_is_one_line_naming_key_value_and_allowed(edit, words):
    problems = bad(edit)
    assert problems, "no problem reported"
    text = "\n".join(problems)
    for word in words:
        assert word in text, text
    assert all("\n" not in p for p in problems)


def test_a_missing_key_is_an_error_never_a_default():
    for section in ("data", "model", "train"):
        for key in PARAMS[section]:
            problems = bad(_del(section, key))
            assert f"{section}.{key} is missing" in "\n".join(problems), (section, key)


def test_unreadable_files_are_one_line(tmp_path):
    broken = tmp_path / "params.yaml"
    broken.write_text("tasks: [x_plus_y\nseeds: [0]\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+, column \d+\)"):
        read_params(broken)
    broken.write_text("seeds: [0]\nseeds: [1]\n")
    with pytest.raises(ConfigError, match="'seeds' is written twice"):
        read_params(broken)
    with pytest.raises(ConfigError, match="not found"):
        read_params(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory, not a params file"):
        read_params(tmp_path)
    broken.write_bytes(b"tasks: [x_plus_y]\n\x7fELF\xff\xfe")
    with pytest.raises(ConfigError, match=r"not a text file \(byte 22 is not UTF-8\)"):
        read_params(broken)


def test_load_params_names_the_file_and_every_problem(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("seeds: [0, 1, 2]", "seeds: [-1]")
    text = text.replace("steps: 7500 ", "steps: 0 ")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(tmp_path / "params.yaml")
    lines = str(err.value).splitlines()
    assert any(line.startswith("params.yaml: seeds = [-1]") for line in lines), lines
    assert any("steps=0" in line for line in lines), lines


def test_get_key_reads_dotted_keys():
    assert get_key(PARAMS, "data.p") == 97
    with pytest.raises(KeyError):
        get_key(PARAMS, "data.q")


@pytest.mark.parametrize("name, safe", [
    ("x_plus_y", True), ("wd_0.05", True), (0.05, True), (113, True), (1e-05, True),
    (None, True), ("my aug; touch X", False), ("$(touch X)", False), ("a/b", False),
    ("..", False), ("-rf", False), ("", False), ("a" * 65, False), ("tab\there", False),
    ("x`id`", False), ("quote'", False), (True, False), ([1], False), ("é", False),
])
def test_safe_names_are_letters_digits_and_four_marks(name, safe):
    """The rule, written out: [A-Za-z0-9_] then up to 63 of [A-Za-z0-9_.+-], on str(name)."""
    assert is_safe_name(name) is safe


@pytest.mark.parametrize("edit, where", [
    (_set("augmentations.my aug; touch X", {"reverse": 0.0, "negate": 0.1}),
     "augmentations key"),
    (_set("tasks", ["x_plus_y;touch X"]), "tasks"),
    (_set("baseline.tasks", ["$(touch X)"]), "baseline.tasks"),
    (_set("studies.architecture.values", ["a/b"]), "studies.architecture.values"),
    (_set("studies.x y", {}), "studies key"),
    (_set("optimizer", "adamw`id`"), "optimizer"),
])
def test_an_unsafe_name_is_the_only_problem_reported(edit, where):
    """Nothing else is checked (or, in a stage, run) once a name is unsafe: one line."""
    problems = bad(edit)
    assert len(problems) == 1, problems
    assert problems[0].startswith(where) and "is not a safe name" in problems[0]


def test_a_registry_key_with_a_dot_is_refused_as_dvc_cannot_find_it():
    """DVC splits params keys at dots (the bug behind wd_0.05 on main before the rename):
    a registry entry named with a dot is one line, before DVC or any stage meets it."""
    def edit(p):
        p["optimizers"]["wd_0.05"] = dict(p["optimizers"]["adamw"], weight_decay=0.05)
    problems = bad(edit)
    assert problems == ["optimizers key = 'wd_0.05' has a dot: DVC reads "
                        "`optimizers.wd_0.05` as a nested key; use another character "
                        "(e.g. wd_0p05)"]


def test_an_unsafe_name_in_two_places_is_one_line():
    def edit(p):
        p["augmentations"]["my aug; touch X"] = {"reverse": 0.0, "negate": 0.1}
        p["studies"]["augmentation"]["values"] = ["my aug; touch X"]
    assert bad(edit) == [
        "augmentations key, studies.augmentation.values = 'my aug; touch X' is not a safe "
        "name: names become stage names and paths, so use letters, digits and _ . + - only, "
        "starting with a letter, digit or _, at most 64 characters"]


@pytest.mark.parametrize("stage, cell", [
    ("baseline@x_div_y", Cell("baseline", "x_div_y")),
    ("augmentation@x_plus_y-negation", Cell("augmentation", "x_plus_y", "negation")),
    ("data_fraction@x_plus_y-0.05", Cell("data_fraction", "x_plus_y", 0.05)),
    ("optimizer@x_div_y-wd_0p05", Cell("optimizer", "x_div_y", "wd_0p05")),
    ("sub/dvc.yaml:concealment@parity-12", Cell("concealment", "parity", 12)),
    ("linear_teacher@linear_regression-0.85", Cell("linear_teacher", "linear_regression", 0.85)),
])
def test_a_stage_reads_its_cell_from_the_dvc_stage_name(stage, cell):
    got = stage_cell(PARAMS, stage)
    assert got == cell and type(got.value) is type(cell.value)
    assert got.stage == stage.rpartition(":")[2]  # the name DVC gave it, read back


@pytest.mark.parametrize("stage, words", [
    ("generate", "not a cell's stage"),
    ("augmentation@x_plus_y", "starts with none of studies.augmentation.tasks"),
    ("augmentation@x_plus_y-mirror", "'mirror' is not one of studies.augmentation.values"),
    ("baseline@multi_add", "baseline.tasks lists"),
    ("nope@x_plus_y", "'nope' is not a study"),
])
def test_a_stage_name_that_is_no_cell_is_one_line(stage, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        stage_cell(PARAMS, stage)
