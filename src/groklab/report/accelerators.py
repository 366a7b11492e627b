"""The accelerators study: Grokfast's filters, StableMax and ⊥Grad on x·y mod 97 (Grokfast's
setting), each against its control and against the base run (Grokfast's baseline: Adam, no
weight decay), and the papers' claims (``references/accelerator_claims.json``).

Comparisons reuse :func:`groklab.summary.compare_cells` (log-rank test with censored seeds,
bootstrap interval of the median difference) on each pair; :data:`EFFECTS` maps a measure to
the runs' columns, so a time-ratio model can be added beside it without touching the rest.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables
from groklab.summary import compare_cells

REF = "accelerator_claims"
STUDY, FACTOR = "accelerators", "optimizer"
# measure -> (column of updates, column saying it was reached); censored at the budget.
EFFECTS = {"steps_to_95": ("steps_to_95", "reached_95"),
           "steps_to_99": ("steps_to_99", "grokked")}


def pair_comparisons(runs: pd.DataFrame, pairs: list[tuple[str, str]], measure: str
                     ) -> pd.DataFrame:
    """``compare_cells`` of each ``(value, reference)`` pair on ``measure``, with the
    speed-up ``median_reference / median`` (``speedup_bound``: ``>=``/``<=`` where a median is
    censored, ``undefined`` where both are)."""
    steps, reached = EFFECTS[measure]
    frames = []
    for value, ref in pairs:
        sub = runs[runs[FACTOR].astype(str).isin([value, ref])]
        if sub[FACTOR].astype(str).nunique() < 2 or steps not in sub:
            continue
        frames.append(compare_cells(sub.rename(columns={FACTOR: "value"}), "value", ref,
                                    metric=steps, event=reached))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out["measure"] = measure
    out["speedup"] = out["median_reference"] / out["median"]
    # median_diff_bound ">=" : this cell's median is censored (a lower bound), so the
    # speed-up is an upper bound; "<=": the reference's is, so it is a lower bound.
    out["speedup_bound"] = out["median_diff_bound"].astype(str).map(
        {">=": "<=", "<=": ">=", "undefined": "undefined"}).fillna("")
    return out


def _speedup(r: pd.Series) -> str:
    if r["speedup_bound"] == "undefined" or tx.missing(r["speedup"]):
        return "undefined (both censored)"
    sign = {">=": "≥ ", "<=": "≤ "}.get(str(r["speedup_bound"]), "")
    x = float(r["speedup"])
    return f"{sign}×{x:,.0f}" if x >= 1000 else f"{sign}×{x:.3g}"


def comparison_table(comparisons: pd.DataFrame) -> str:
    rows = [{"measure": "95%" if r["measure"] == "steps_to_95" else "99%",
             "value": f"`{r['value']}`", "vs": f"`{r['reference']}`",
             "seeds reached": f"{int(r['n_reached'])}/{int(r['n'])} vs "
                              f"{int(r['n_reached_reference'])}/{int(r['n_reference'])}",
             "median updates": f"{r['median']:.0f} vs {r['median_reference']:.0f}",
             "speed-up": _speedup(r), "time ratio [95% CI]": st.fmt_ratio(r),
             "log-rank p (method; floor)": st.fmt_logrank(r),
             "verdict (decided by)": st.fmt_verdict(r)}
            for _, r in comparisons.iterrows()]
    return tx.markdown_table(pd.DataFrame(rows),
                             align=["l", "l", "l", "r", "r", "r", "r", "r", "l"])


def floor_note(comparisons: pd.DataFrame) -> str:
    return (f"Seeds behind each verdict, and the smallest p its deciding test could give: "
            f"{st._floors(comparisons)}. A pair is called faster or slower only when that "
            "test's p is below 0.05 (groklab.summary.decide: the exact log-rank where its "
            "floor allows, else the log-normal time ratio's interval).")


def _row(comparisons: pd.DataFrame, value: str, ref: str, measure: str) -> pd.Series | None:
    rows = comparisons[(comparisons["value"].astype(str) == value)
                       & (comparisons["reference"].astype(str) == ref)
                       & (comparisons["measure"] == measure)] if len(comparisons) else []
    return None if len(rows) == 0 else rows.iloc[0]


def speedup_verdicts(comparisons: pd.DataFrame, claims: list[dict[str, Any]]
                     ) -> list[tx.Verdict]:
    """Grokfast's ×44 / ×50 against the base run on updates to 95%; the LR-matched control
    is said beside it (it is not the paper's claim, it is the users' question)."""
    out = []
    for c in claims:
        base = _row(comparisons, c["value"], c["base"], c["measure"])
        if base is None:
            continue
        control = _row(comparisons, c["value"], c["control"], c["measure"])
        against = (f"; against its learning-rate-matched control `{c['control']}`: "
                   f"{_speedup(control)}, {st.fmt_verdict(control)}, "
                   f"p {tx.fmt_p(control['p_value'])}"
                   if control is not None else "")
        agrees = {"faster": True, "slower": False}.get(str(base["verdict"]))
        out.append(tx.Verdict(
            f"`{c['value']}` reached 95% in a median {base['median']:.0f} updates against "
            f"`{c['base']}`'s {base['median_reference']:.0f} ({_speedup(base)}, "
            f"{st.fmt_verdict(base)}, p {tx.fmt_p(base['p_value'])}){against}",
            f"{c['source']} reports ×{c['factor']:g} ({c['steps']} vs {c['base_steps']} "
            "updates to 95%, one seed)", agrees,
            "its filtered runs also had L2 weight decay its baseline lacked; ours keep that "
            "difference, so the filter's own share is in the control comparison"))
    return out


def _cell(cells: pd.DataFrame, value: str) -> pd.Series | None:
    rows = cells[cells[FACTOR].astype(str) == value]
    return None if rows.empty else rows.iloc[0]


def regulariser_verdicts(cells: pd.DataFrame, spec: dict[str, Any]) -> list[tx.Verdict]:
    """StableMax groks without weight decay; ⊥Grad generalises without the delay."""
    out = []
    claim = spec.get("groks_without_weight_decay")
    row = _cell(cells, claim["value"]) if claim else None
    if row is not None:
        n, k = int(row["n_seeds"]), int(row["n_seeds"] - row["n_censored"])
        ctrl = _cell(cells, claim["control"])
        also = (f"; the control `{claim['control']}` (softmax, no weight decay): "
                f"{tx.reached(ctrl)}" if ctrl is not None else "")
        out.append(tx.Verdict(
            f"`{claim['value']}` (no weight decay) reached 99% in {k}/{n} seeds "
            f"({tx.cell_steps(row)} updates){also}", f"{claim['source']}: {claim['text']}",
            st.majority(k, n), "the claim was made for an MLP at lr 0.01; this is the "
            "Transformer at Grokfast's setting"))
    claim = spec.get("no_delay")
    row = _cell(cells, claim["value"]) if claim else None
    if row is not None:
        n = int(row["n_seeds"])
        reached = n - int(row["n_censored"])
        prompt = reached - int(row.get("n_groks", 0) or 0)
        out.append(tx.Verdict(
            f"`{claim['value']}` reached 99% in {reached}/{n} seeds, {prompt} of them within "
            f"the grok delay of training ({tx.cell_steps(row)} updates)",
            f"{claim['source']}: {claim['text']}", st.majority(prompt, n),
            "validation lags training by more than the grok delay here"))
    return out


def _steps95(c: pd.Series) -> str:
    if "steps_to_95_mean" not in c or tx.missing(c["steps_to_95_mean"]):
        return tx.DASH
    return tx.fmt_steps(c["steps_to_95_mean"], c["steps_to_95_ci_low"], c["steps_to_95_ci_high"],
                        n_censored=int(c.get("n_censored_95", 0) or 0),
                        n_seeds=int(c["n_seeds"]))


EXTRA = {"steps to 95%": _steps95,
         "max softmax collapse": lambda c: tx.metric(c, "max_softmax_collapse", 3)}


def body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, runs, budget = tables.cells, tables.runs, ctx.budget(STUDY)
    spec, quoted = st.claims(ctx, REF, STUDY)
    lines = [st.study_table(cells, FACTOR, ("steps to 99%", "reached 99%", "groks",
                                            "grok delay", "final val acc"), EXTRA),
             *st.notes(ctx, tables, budget),
             "", "_Softmax collapse_: the largest share, over the run, of the training-curve "
             "sample whose float32 softmax cross-entropy was exactly 0 (the example gives no "
             "gradient)."]
    lines += st.fraction_figure(ctx, tables, STUDY, FACTOR)
    lines += st.curves(ctx, tables, STUDY, FACTOR,
                       "Accelerators study: accuracy vs updates, one colour per intervention")
    lines += st.published(quoted)
    if runs is None:
        return lines
    speedups = spec.get("speedups", [])
    pairs = [(c["value"], ref) for c in speedups for ref in (c["control"], c["base"])]
    pairs += [(spec[k]["value"], spec[k]["control"]) for k in
              ("groks_without_weight_decay", "no_delay") if k in spec]
    versus = pd.concat([pair_comparisons(runs, pairs, m) for m in EFFECTS], ignore_index=True)
    lines += ["", "### Against controls and the base run", ""]
    if versus.empty:
        return lines + ["No intervention has its control or base run among the cells, so "
                        "nothing is compared."]
    lines += ["Each intervention against its control (Grokfast: AdamW-type step with the "
              "learning rate scaled by the filter's gain, docs/accelerators.md; StableMax "
              "and ⊥Grad: the same optimizer with softmax and no weight decay) and against "
              "the base run, on updates to 95% (Grokfast's measure) and to 99%. Speed-up: "
              "median of the reference over the median of the cell, censored seeds at the "
              "budget (≥/≤: a bound).", "", comparison_table(versus), "", floor_note(versus),
              "", *tx.bullets([*speedup_verdicts(versus, speedups),
                               *regulariser_verdicts(cells, spec)])]
    return lines


SECTIONS = (Section(STUDY, "Accelerators study", body),)
