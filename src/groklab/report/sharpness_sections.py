"""Report sections on the sharpness of grokking (seed 004): concealed parity, the linear
student-teacher model, and every modular-arithmetic run together.

Each builder takes the :class:`~groklab.report.context.Context` and the study's tables and
returns the section body (markdown lines); figures go to ``ctx.figures``.
"""

from __future__ import annotations

import pandas as pd

from groklab.report import claims
from groklab.report import figures as fg
from groklab.report import markdown as md
from groklab.report import sharpness as sh
from groklab.report.context import Context, StudyTables, _flat, censoring_and_fits
from groklab.report.studies import factor_reading, fmt_sig, study_table, trend
from groklab.report.trends import metric_vs_factor

MODULAR_TASKS = ("x_plus_y", "x_minus_y", "x_div_y", "permutation", "multi_add")


def _agreement(runs: pd.DataFrame) -> str:
    """Do both log-log slopes have seed 004's sign (sharpness falls as the gap grows)?"""
    fits = {m: sh.loglog_fit(runs[sh.GAP], runs[m]) for m in sh.MEASURES}
    if not all(f.ok for f in fits.values()):
        return "Too few positive points for both log-log fits; no comparison with seed 004."
    trends = {m.replace("_", " "): sh.direction(f) for m, f in fits.items()}
    falling = [m for m, t in trends.items() if t == "falls"]
    if len(falling) == len(fits):
        return "Both measures fall significantly with the gap, as seed 004 reports."
    others = "; ".join(f"{m} {t or 'has no significant trend'}" for m, t in trends.items()
                       if t != "falls")
    return ("Seed 004 reports that both measures fall with the gap; here "
            + (f"{', '.join(falling)} falls but " if falling else "") + f"{others}.")


def _sharpness_block(ctx: Context, runs: pd.DataFrame | None, name: str, hue: str,
                     what: str, title: str) -> list[str]:
    if runs is None:
        return ["", "_No per-run table: the sharpness figures need it._"]
    fig = sh.sharpness_panels(runs, hue=hue, title=title)
    return ["", "### Sharpness against relative gap", "",
            ctx.figure(f"{name}_sharpness", fig, title), "",
            f"One point per run (seed × {hue}). Log-log fit of log10(sharpness) on "
            "log10(relative gap), over runs where both are positive:", "",
            sh.fit_table(runs), "", sh.positive_counts(runs), "",
            sh.fit_reading(runs, what) + " " + _agreement(runs)]


def concealment_body(ctx: Context, study: StudyTables) -> list[str]:
    cells, runs, budget = study.cells, study.runs, ctx.budget("concealment")
    fig = metric_vs_factor(cells, "concealed_bits", ["steps_to_99", "relative_gap"],
                           labels={"steps_to_99": "updates to 99% validation accuracy",
                                   "relative_gap": "relative gap τ_val/τ_train − 1"},
                           limits={"steps_to_99": budget}, hue=None,
                           title="Concealed parity: updates to 99% and relative gap")
    lines = ["Chance accuracy is 0.5 (two classes), so the erf fits run from 0.5 to 1.", "",
             study_table(cells, "concealed_bits"), *censoring_and_fits(study, budget), "",
             ctx.figure("concealment_gap", fig, "Steps to 99% and relative gap vs concealed bits"),
             *_sharpness_block(ctx, runs, "concealment", "concealed_bits",
                               "the concealment runs",
                               "Concealed parity: sharpness vs relative gap")]
    if study.histories is not None:
        curves = fg.accuracy_curves(study.histories, runs, hue="concealed_bits", col="task",
                                    title="Concealed parity: accuracy vs updates per n")
        lines += ["", ctx.figure("concealment_curves", curves, "Accuracy curves per n")]
    lines += ["", "### Published", "", *claims.quotes(claims.CONCEALMENT_QUOTES),
              "", "### Reading", "",
              factor_reading(cells, "concealed_bits", budget=budget, numeric=True)]
    return lines


LT_METRICS = (("relative_gap", "relative gap"), ("relative_sharpness", "relative sharpness"),
              ("absolute_sharpness", "absolute sharpness"), ("train_mid_step", "train midpoint"),
              ("val_mid_step", "val midpoint"))


def linear_teacher_table(cells: pd.DataFrame) -> str:
    """One row per λ: fit-based gap and sharpness, midpoint steps, fits ok."""
    rows = [{"λ": f"{c['lam']:g}",
             **{label: fmt_sig(c.get(f"{m}_mean"), c.get(f"{m}_ci_low"), c.get(f"{m}_ci_high"))
                for m, label in LT_METRICS},
             "fits ok": f"{int(c['n_fit_ok'])}/{int(c['n_seeds'])}"}
            for _, c in cells.iterrows()]
    return md.markdown_table(pd.DataFrame(rows), align=["l"] + ["r"] * (len(LT_METRICS) + 1))


def linear_teacher_intro(ctx: Context) -> list[str]:
    spec = (ctx.params.get("studies") or {}).get("linear_teacher")
    text = ("The solvable linear student-teacher model of Levi et al. (2023), as in seed 004: "
            "a linear student trained by gradient descent on d_in/λ examples of a linear "
            "teacher; an example is correct when its squared error is below a threshold. "
            "**Varied:** λ = d_in/n_train.")
    if spec:
        text += f" **Settings** (`studies.linear_teacher`): {_flat(spec)}."
    return [text]


def linear_teacher_body(ctx: Context, study: StudyTables) -> list[str]:
    cells, runs = study.cells, study.runs
    lines = [linear_teacher_table(cells)]
    if runs is not None and "train_fit_ok" in runs:
        lines += ["", "Fit failures:", "", sh.fit_failure_table(runs)]
    lines += [f"\n_{note}_" for note in study.notes]
    lines += _sharpness_block(ctx, runs, "linear_teacher", "lam", "the linear-teacher runs",
                              "Linear student-teacher: sharpness vs relative gap")
    if study.histories is not None:
        fig = fg.accuracy_curves(study.histories, None, hue="lam", col=None, logx=True,
                                 xlabel="gradient-descent steps (log)", train_label="train",
                                 title="Linear student-teacher: accuracy vs steps per λ")
        lines += ["", ctx.figure("linear_teacher_curves", fig, "Accuracy curves per λ")]
    lines += ["", "### Published", "", *claims.quotes(claims.LINEAR_TEACHER_QUOTES),
              "", "### Reading", ""]
    lam = cells["lam"].astype(float)
    for metric, label in LT_METRICS[:3]:
        if f"{metric}_mean" in cells:
            lines.append(f"- As λ grows, mean {label} "
                         f"{trend(lam, cells[f'{metric}_mean'].astype(float))}.")
    return lines


def modular_runs(ctx: Context) -> pd.DataFrame | None:
    """Every distinct run of a modular-arithmetic task over the experiment and all studies,
    once each: a base run that several studies read (and the experiment at the paper
    defaults) is one run, labelled with the first study that reads it."""
    frames = [t.runs[t.runs["task"].isin(MODULAR_TASKS)]
              for name, t in ctx.studies.items()
              if t is not None and t.runs is not None and "task" in t.runs]
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    runs = pd.concat(frames, ignore_index=True)
    return runs.drop_duplicates("run_key").reset_index(drop=True) if "run_key" in runs \
        else runs


def modular_intro(ctx: Context) -> list[str]:
    return [f"Every run of a modular-arithmetic task ({', '.join(MODULAR_TASKS)}) in the "
            "experiment and every study, one point per seed, coloured by study: both sharpness "
            "measures against the relative gap on log-log axes (points ≤ 0 cannot be drawn and "
            "are counted below)."]


def modular_body(ctx: Context, study: StudyTables | None) -> list[str]:
    runs = modular_runs(ctx)
    if runs is None:
        return ["_Skipped: no per-run table of a modular-arithmetic study exists yet._"]
    title = "All modular-arithmetic runs: sharpness vs relative gap (log-log)"
    fig = sh.sharpness_vs_gap(runs, hue="study", log=True, title=title)
    return [ctx.figure("modular_sharpness", fig, title), "",
            f"{len(runs)} distinct runs (each configuration and seed once, however many "
            f"studies read it) from {runs['study'].nunique()} tables. Pooled log-log fit:", "",
            sh.fit_table(runs), "", sh.positive_counts(runs), "",
            "Per study:", "", sh.fit_table_by(runs, "study"), "",
            "Failed erf fits by reason (a run without both fits has no gap or relative "
            "sharpness):", "", sh.fit_failure_table(runs, by="study"), "",
            "### Reading", "", sh.fit_reading(runs, "all modular-arithmetic runs pooled")
            + " " + _agreement(runs)]
