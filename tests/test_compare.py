"""`make compare` (groklab.compare) on hand-made `dvc exp show --json` output; the real
output of DVC is compared in tests/test_workflow.py."""

from __future__ import annotations

from groklab.compare import compare, differing, flatten, fmt, revisions


def entry(rev: str, name: str | None, params: dict, metrics: dict, timestamp: str = "",
          error: dict | None = None) -> dict:
    data = {"rev": rev, "timestamp": timestamp,
            "params": {"params.yaml": {"data": params}},
            "metrics": {f"reports/metrics/{k}.json": {"data": v} for k, v in metrics.items()},
            "deps": {"models": {"hash": rev * 4}}}
    return {"rev": rev, "name": name, "data": data, "error": error}


BASE = {"aug": "baseline", "seeds": [0, 1], "train": {"steps": 7500}}
SHOWN = [
    {"rev": "workspace", "name": None, "error": None, "experiments": None,
     "data": entry("workspace", None, {**BASE, "aug": "reversal"}, {})["data"]},
    {**entry("a" * 40, "main", BASE,
             {"experiment": {"x_plus_y": {"steps_to_99_mean": 2860.0, "frac_grokked": 1.0}},
              "baseline": {"x_plus_y": {"steps_to_99_mean": 2860.0}}}),
     "experiments": [
         # newest first, as DVC lists them; a failed one has no results
         {"name": "failed", "executor": None,
          "revs": [{**entry("f" * 40, "failed", BASE, {}, "2026-01-03"),
                    "error": {"msg": "boom"}}]},
         {"name": "c30", "executor": None,
          "revs": [entry("c" * 40, "c30", {**BASE, "aug": "combined30"},
                         {"experiment": {"x_plus_y": {"steps_to_99_mean": 1843.3333,
                                                      "frac_grokked": 1.0,
                                                      "clean_val_acc_mean": 0.97}},
                          "baseline": {"x_plus_y": {"steps_to_99_mean": 2860.0}}},
                         "2026-01-02")]},
         {"name": "neg", "executor": None,
          "revs": [entry("b" * 40, "neg", {**BASE, "aug": "negation"},
                         {"experiment": {"x_plus_y": {"steps_to_99_mean": 2400.0,
                                                      "frac_grokked": 0.5}},
                          "baseline": {"x_plus_y": {"steps_to_99_mean": 2860.0}}},
                         "2026-01-01")]},
     ]},
]


def test_flatten_joins_keys_and_keeps_lists():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": "x"}


def test_revisions_are_the_commit_then_its_experiments_oldest_first():
    labels = [label for label, _ in revisions(SHOWN)]
    assert labels == ["main", "neg", "c30"]  # no workspace, no failed experiment
    values = dict(revisions(SHOWN))["c30"]
    assert values["aug"] == "combined30"
    assert values["train.steps"] == 7500
    assert values["experiment: x_plus_y.clean_val_acc_mean"] == 0.97


def test_only_rows_that_differ_params_first():
    rows = differing(revisions(SHOWN))
    assert [name for name, _ in rows] == [
        "aug", "experiment: x_plus_y.steps_to_99_mean", "experiment: x_plus_y.frac_grokked",
        "experiment: x_plus_y.clean_val_acc_mean"]
    assert dict(rows)["experiment: x_plus_y.clean_val_acc_mean"] == ["-", "-", 0.97]
    assert [n for n, _ in differing(revisions(SHOWN), keep="steps_to")] == [
        "experiment: x_plus_y.steps_to_99_mean"]


def test_numbers_read_as_a_person_writes_them():
    assert [fmt(v) for v in (2860.0, 1843.3333, 0.5, 1e-5, 7, None, True, [0, 1.5])] == [
        "2860", "1843", "0.5", "1e-05", "7", "null", "true", "[0, 1.5]"]


def test_the_table_hand_written():
    expected = "\n".join([
        "                                             main       neg         c30",
        "aug                                      baseline  negation  combined30",
        "experiment: x_plus_y.steps_to_99_mean        2860      2400        1843",
        "experiment: x_plus_y.frac_grokked               1       0.5           1",
        "experiment: x_plus_y.clean_val_acc_mean         -         -        0.97",
    ])
    assert compare(SHOWN) == expected


def test_a_commit_without_experiments_says_how_to_run_one():
    alone = [{**SHOWN[1], "experiments": []}]
    assert compare(alone) == ("main has no experiments yet: `dvc exp run -S aug=combined30` "
                              "runs one.")


def test_metric_files_are_named_by_family_and_cell():
    from groklab.compare import metric_file

    assert metric_file("reports/metrics/experiment/x_plus_y.json") == "experiment/x_plus_y"
    assert metric_file("reports/metrics/augmentation/x_plus_y-combined30.json") == \
        "augmentation/x_plus_y-combined30"
    assert metric_file("reports/metrics/experiment.json") == "experiment"
    assert metric_file("metrics/metrics.json") == "metrics"
    assert metric_file("scores.json") == "scores"
