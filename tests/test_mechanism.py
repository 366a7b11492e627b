"""Mechanism events as censored times, on hand-made curves with known answers."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from groklab.mechanism import Thresholds, events, first_at_most

TH = Thresholds(circuit_below=0.5, cleanup_above=1.0)


def history(train, val, every=100):
    steps = [every * i for i in range(len(train))]
    return pd.DataFrame({"seed": 0, "step": steps, "train_acc": train, "val_acc": val})


def measures(restricted, excluded, n_key=None, every=100):
    steps = [every * i for i in range(len(restricted))]
    return pd.DataFrame({"seed": 0, "step": steps, "restricted_loss": restricted,
                         "excluded_loss": excluded,
                         "n_key": n_key if n_key is not None else [2] * len(steps)})


def test_nanda_ordering_circuit_then_cleanup_then_validation():
    h = history(train=[0.1, 1, 1, 1, 1, 1, 1], val=[0, 0.1, 0.1, 0.2, 0.5, 0.995, 1])
    # Excluded loss starts high (untrained), falls while memorising, rises at cleanup.
    m = measures(restricted=[4, 4, 3, 0.4, 0.2, 0.1, 0.1], excluded=[4, 0.1, 0.2, 0.5, 1.5, 3, 4])
    e = events(m, h, budget=600, thresholds=TH)
    assert (e["circuit_step"], e["circuit_reached"]) == (300, True)
    assert (e["cleanup_step"], e["cleanup_reached"]) == (400, True)  # not step 0: not fitting
    assert e["circuit_lag"] == -200 and e["cleanup_lag"] == -100  # validation at 500


def test_a_loss_spike_or_no_key_frequency_is_not_cleanup():
    """Excluded loss >= 1 counts only while training accuracy is >= 99% and some frequency
    is key: at 200 training accuracy fell (a spike), at 300 there is no key frequency."""
    h = history(train=[0.1, 1, 0.6, 1, 1], val=[0, 0.2, 0.2, 0.3, 0.4])
    m = measures(restricted=[4, 4, 4, 4, 4], excluded=[4, 0.1, 2.5, 2.0, 1.2],
                 n_key=[0, 0, 2, 0, 1])
    e = events(m, h, budget=400, thresholds=TH)
    assert (e["cleanup_step"], e["cleanup_reached"]) == (400, True)


def test_events_never_reached_are_censored_at_the_budget():
    h = history(train=[0.1, 0.5, 0.9], val=[0, 0, 0])  # never memorises, never generalises
    m = measures(restricted=[4, 4, 4], excluded=[4, 4, 4])
    e = events(m, h, budget=7500, thresholds=TH)
    assert e["circuit_step"] == e["cleanup_step"] == 7500
    assert not e["circuit_reached"] and not e["cleanup_reached"]
    assert math.isnan(e["circuit_lag"]) and math.isnan(e["cleanup_lag"])


def test_threshold_equality_counts_and_nan_never_does():
    assert first_at_most([0, 10, 20], [float("nan"), 0.5, 0.1], 0.5, 30).step == 10
    assert not first_at_most([0, 10], [float("nan"), 0.6], 0.5, 30).reached


def test_thresholds_read_from_params():
    assert Thresholds.from_params({"analysis": {"circuit_below": 0.3, "cleanup_above": 2}}
                                  ) == Thresholds(0.3, 2.0)
    with pytest.raises(KeyError):
        Thresholds.from_params({"analysis": {}})


def test_compare_cells_on_an_event_time_column():
    """The study comparison reads the event's own time and censoring columns: three seeds
    whose circuit forms at 100-300 against three at 1000-3000 are completely separated, the
    exact two-sided log-rank p at 3 vs 3 is 2/C(6,3) = 0.1; steps_to_99 (identical in both
    cells) would give p = 1. Unmeasured rows (NaN) are left out."""
    from groklab.summary import compare_cells

    rows = []
    for value, steps in (("base", [1000, 2000, 3000]), ("fast", [100, 200, 300])):
        for s in steps:
            rows.append({"task": "x_plus_y", "value": value, "steps_to_99": 5000,
                         "grokked": True, "budget": 7500, "circuit_step": s,
                         "circuit_reached": True})
    rows.append({"task": "x_div_y", "value": "fast", "steps_to_99": 5000, "grokked": True,
                 "budget": 7500, "circuit_step": float("nan"), "circuit_reached": False})
    runs = pd.DataFrame(rows)
    out = compare_cells(runs, "value", "base", metric="circuit_step",
                        event="circuit_reached")
    assert out.task.tolist() == ["x_plus_y"]
    assert out.logrank_p.iloc[0] == pytest.approx(0.1)
    assert out["median"].iloc[0] == 200 and out["median_reference"].iloc[0] == 2000
    assert compare_cells(runs, "value", "base").logrank_p.iloc[0] == pytest.approx(1.0)


def test_evaluate_reads_events_from_a_real_measured_cell(tmp_path):
    """A real (tiny) run saved as the stage saves it: `evaluate`'s per-seed rows carry the
    events, equal to a plain-Python scan of its measures.csv and history.csv."""
    from groklab.cells import BASELINE, Cell
    from groklab.config import RunConfig
    from groklab.metrics import Analysis
    from groklab.stages.evaluate import read_cell
    from groklab.stages.outputs import save_run
    from groklab.train import train

    cfg = RunConfig().replace(data={"p": 13}, model={"width": 32, "heads": 2},
                              train={"steps": 60, "batch_size": 64, "eval_every": 10,
                                     "measures_every": 1, "device": "cpu"})
    cell = Cell(BASELINE, "x_plus_y")
    save_run(train(cfg, [0, 1], engine="loop"), cell.path(tmp_path))
    # Thresholds the tiny run crosses: restricted loss below its own median, excluded above 0.
    measures = pd.read_csv(cell.path(tmp_path) / "measures.csv")
    history = pd.read_csv(cell.path(tmp_path) / "history.csv")
    th = Thresholds(circuit_below=float(measures.restricted_loss.median()), cleanup_above=0.0)
    _, _, _, rows = read_cell(tmp_path, cell, Analysis(), th)
    for seed in (0, 1):
        m = measures[measures.seed == seed].to_dict("records")
        h = history[history.seed == seed].to_dict("records")
        circuit = next((r["step"] for r in m if r["restricted_loss"] <= th.circuit_below), 60)
        train_acc = {r["step"]: r["train_acc"] for r in h}
        cleanup = next((r["step"] for r in m if train_acc[r["step"]] >= 0.99
                        and r["n_key"] > 0 and r["excluded_loss"] >= 0), 60)
        row = rows[rows.seed == seed].iloc[0]
        assert row["circuit_step"] == circuit and row["cleanup_step"] == cleanup
        assert bool(row["circuit_reached"]) == any(
            r["restricted_loss"] <= th.circuit_below for r in m)


def test_report_section_on_a_real_measured_mechanism_cell(tmp_path):
    """The mechanism section on a real (tiny) transformer1 cell: its measures figure, the
    events table (seed counts as in the runs table), the Kaplan-Meier figures and a verdict
    for each claim."""
    from groklab.cells import Cell
    from groklab.config import RunConfig
    from groklab.metrics import Analysis
    from groklab.params import load_params
    from groklab.report import mechanism
    from groklab.report.context import Context, StudyTables
    from groklab.stages.evaluate import read_cell
    from groklab.stages.outputs import save_run
    from groklab.summary import cell_summary
    from groklab.train import train

    cfg = RunConfig().replace(data={"p": 13, "encoding": "compact"},
                              model={"arch": "transformer1", "width": 32, "mlp_hidden": 64},
                              train={"steps": 40, "batch_size": None, "eval_every": 10,
                                     "measures_every": 1, "device": "cpu"})
    cell = Cell("mechanism", "x_plus_y", "transformer1")
    save_run(train(cfg, [0, 1], engine="loop"), cell.path(tmp_path))
    _, _, _, runs = read_cell(tmp_path, cell, Analysis(), Thresholds(3.0, 0.0))
    runs = runs.assign(task="x_plus_y", arch="transformer1", cell=cell.name,
                       path="mechanism/x_plus_y-transformer1")
    cells = pd.DataFrame([{"task": "x_plus_y", "arch": "transformer1", "cell": cell.name,
                           "path": "mechanism/x_plus_y-transformer1", **cell_summary(runs)}])
    params = load_params("params.yaml")
    refs = {"mechanism_claims": json.loads(Path("references/mechanism_claims.json").read_text())}
    ctx = Context(params=params, studies={"mechanism": None}, references=refs,
                  tables_dir=tmp_path, models_dir=tmp_path)
    text = "\n".join(mechanism.body(ctx, StudyTables(cells, runs, None)))
    assert {"mechanism_mechanism_x_plus_y-transformer1", "mechanism_circuit_km",
            "mechanism_cleanup_km"} <= set(ctx.figures)
    (row,) = [line for line in text.splitlines() if line.startswith("| x_plus_y")]
    circuit = int(tx_bool(runs["circuit_reached"]).sum())
    assert f"| {circuit}/2, " in row
    assert text.count("our runs") == 3  # the ordering and the two Exploring Grokking figures


def tx_bool(s):
    from groklab.report.text import as_bool

    return as_bool(s)


@pytest.mark.slow
def test_a_small_run_that_groks_records_when_its_circuit_formed():
    """A 2-layer Transformer at p = 23 (70% data) that groks within ~1000 updates, measured
    every 10. From the recorded columns alone (plain Python): validation reaches 99%, and the
    restricted loss first falls to 0.5 nats only *after* that, never before it: with key
    frequencies chosen online from the embedding, this small run's circuit, by our rule,
    forms after the validation jump (docs/mechanism.md says so; Nanda et al. fix the final
    model's frequencies instead). The events `evaluate` computes agree."""
    from groklab.config import RunConfig
    from groklab.train import train

    cfg = RunConfig().replace(
        data={"p": 23, "train_fraction": 0.7}, model={"width": 64},
        optim={"lr": 3e-3, "weight_decay": 1.0},
        train={"steps": 1500, "batch_size": 256, "eval_every": 10, "stop_after_grok": 100,
               "measures_every": 1, "device": "cpu"})
    res = train(cfg, [1], engine="loop")
    h = res.history.to_dict("records")
    m = res.measures.to_dict("records")
    val99 = next(r["step"] for r in h if r["val_acc"] >= 0.99)  # StopIteration: no grokking
    circuit = next((r["step"] for r in m if r["restricted_loss"] <= 0.5), None)
    assert circuit is None or circuit > val99, (circuit, val99)
    e = events(res.measures, res.history, 1500, TH)
    assert e["circuit_reached"] == (circuit is not None)
    assert e["circuit_step"] == (circuit if circuit is not None else 1500)
    if circuit is not None:
        assert e["circuit_lag"] == circuit - val99 > 0
