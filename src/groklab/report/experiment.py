"""The experiment: every task of ``tasks`` with the knobs `dvc exp run -S` turns."""

from __future__ import annotations

from groklab.cells import EXPERIMENT, Cell, cell_config, experiment_source
from groklab.params import KNOBS
from groklab.report import plots
from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables, describe_config

COLUMNS = ("steps to 99%", "reached 99%", "groks", "grok delay", "final train acc",
           "final val acc")
RATIOS = {"relative gap": lambda c: tx.metric(c, "relative_gap", 2),
          "relative sharpness": lambda c: tx.metric(c, "relative_sharpness", 2),
          "fits ok": lambda c: tx.count(c, "n_fit_ok")}


def intro(ctx: Context) -> list[str]:
    knobs = {k: ctx.params[k] for k in KNOBS}
    lines = ["The `experiment` stages run every task in `tasks` with the current knobs: "
             + ", ".join(f"{k} = `{v}`" for k, v in knobs.items()) + "."]
    task = ctx.params["tasks"][0]
    source = experiment_source(ctx.params, task)
    if source is not None:
        lines += ["", "These are the paper defaults, so each task's experiment is its base run "
                  f"(`{source.stage}`, …), trained once and read here."]
    else:
        cfg = cell_config(ctx.params, Cell(EXPERIMENT, task))
        lines += ["", f"Resolved settings: {describe_config(cfg, ctx.params['seeds'])}"]
    return lines


def body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, budget = tables.cells, ctx.budget(EXPERIMENT)
    n_all = int((cells["n_censored"] == 0).sum())
    lines = [st.study_table(cells, "task", COLUMNS, extra=RATIOS), "",
             f"{n_all} of {len(cells)} tasks reached 99% validation accuracy in every seed. "
             + ("Steps to 99%: mean ± half-width of the 95% interval over seeds. "
                if cells["n_seeds"].max() > 1 else "Steps to 99%: one seed, so no interval. ")
             + "Relative gap "
             "τ_val/τ_train − 1 and relative sharpness s_val/s_train come from the erf fits of "
             "seeds where both fits are ok (`fits ok`); τ_train is fitted to the training "
             "curve, accuracy on the un-augmented training split.",
             *st.notes(ctx, tables, budget)]
    if tables.histories is not None:
        knobs = ", ".join(str(ctx.params[k]) for k in KNOBS)
        fig = plots.accuracy_curves(tables.histories, tables.runs, hue=None, col="task",
                                    title=f"Experiment: accuracy vs updates ({knobs})")
        lines += ["", ctx.figure("experiment_curves", fig, "Experiment accuracy curves")]
    return lines


SECTIONS = (Section(EXPERIMENT, "Experiment", body, intro),)
