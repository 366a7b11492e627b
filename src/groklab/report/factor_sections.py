"""Report sections of the grokking-project studies (seeds 002, 003): architecture, optimizer,
training fraction, batch size and number of operands.

Each builder takes the :class:`~groklab.report.context.Context` and the study's tables and
returns the section body (markdown lines); figures go to ``ctx.figures``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from groklab.cells import studies
from groklab.config import ConfigError
from groklab.report import claims
from groklab.report import figures as fg
from groklab.report import markdown as md
from groklab.report.context import Context, StudyTables, censoring_and_fits, describe_config
from groklab.report.studies import factor_reading, grokked, study_table, trend
from groklab.report.trends import metric_vs_factor


def _per_cell(runs: pd.DataFrame | None, factor: str,
              stat: Callable[[pd.DataFrame], Any]) -> dict[tuple[Any, Any], Any]:
    """``stat`` of each cell's seed rows, keyed by (task, factor value)."""
    if runs is None:
        return {}
    return {key: stat(g) for key, g in runs.groupby(["task", factor], sort=False)}


def _train_fit_column(runs: pd.DataFrame | None, factor: str) -> dict[str, Callable]:
    """Extra table column: seeds whose *training* accuracy reached 99% (k/n)."""
    fit = _per_cell(runs, factor, lambda g: f"{int(md.as_bool(g['train_reached']).sum())}/{len(g)}")
    if not fit:
        return {}
    return {"train reached 99%": lambda c: fit.get((c["task"], c[factor]), md.DASH)}


def _curves(ctx: Context, study: StudyTables, name: str, factor: str, title: str) -> list[str]:
    if study.histories is None:
        return []
    fig = fg.accuracy_curves(study.histories, study.runs, hue=factor, col="task", title=title)
    return ["", ctx.figure(f"{name}_curves", fig, title)]


def _steps_bars(ctx: Context, cells: pd.DataFrame, name: str, factor: str, budget: int,
                title: str) -> list[str]:
    fig = fg.steps_to_99(cells, hue=factor, budget=budget, title=title)
    return ["", ctx.figure(f"{name}_steps_to_99", fig, title)]


def architecture_body(ctx: Context, study: StudyTables) -> list[str]:
    cells, budget = study.cells, ctx.budget("architecture")
    lines = [study_table(cells, "arch", extra=_train_fit_column(study.runs, "arch")),
             *censoring_and_fits(study, budget),
             *_steps_bars(ctx, cells, "architecture", "arch", budget,
                          "Architecture study: updates to 99% validation accuracy"),
             *_curves(ctx, study, "architecture", "arch",
                      "Architecture study: accuracy vs updates"),
             "", "### Published", "", *claims.quotes(claims.ARCH_QUOTES)]
    verdicts = []
    fits = _per_cell(study.runs, "arch", lambda g: (int(md.as_bool(g["train_reached"]).sum()),
                                                    len(g)))
    for arch, groks in claims.ARCH_GROKS.items():
        rows = cells[cells["arch"] == arch]
        if rows.empty:
            continue
        k = int((rows["n_seeds"] - rows["n_censored"]).sum())
        n = int(rows["n_seeds"].sum())
        train = ", ".join(f"{r['task']} {r['final_train_acc_mean']:.3f}"
                          for _, r in rows.iterrows())
        fit = [fits[(r["task"], arch)] for _, r in rows.iterrows() if (r["task"], arch) in fits]
        fitted = (f"; training accuracy reached 99% in {sum(a for a, _ in fit)} of "
                  f"{sum(b for _, b in fit)} seeds" if fit else "")
        verdicts.append(f"`{arch}` reached 99% validation accuracy in {k} of {n} seeds over "
                        f"{', '.join(map(str, rows['task']))} (final training accuracy: {train}"
                        f"{fitted}); seed 003 says it {'groks' if groks else 'does not grok'}: "
                        + ("our runs agree" if (k > 0) == groks else "our runs disagree") + ".")
    lines += ["", "### Reading", "", factor_reading(cells, "arch", budget=budget), "",
              *[f"- {v}" for v in verdicts]]
    return lines


def _variant_table(params: dict[str, Any], variants: list[str]) -> str:
    opts = params.get("optimizers") or {}
    model_dropout = (params.get("model") or {}).get("dropout", 0.0)
    batch = (params.get("train") or {}).get("batch_size")
    rows = []
    for v in variants:
        o = opts.get(v, {})
        rows.append({
            "variant": f"`{v}`", "kind": o.get("kind", "?"), "lr": o.get("lr", md.DASH),
            "weight decay": o.get("weight_decay", md.DASH),
            "momentum": (f"{o.get('momentum', 0)}" + (" Nesterov" if o.get("nesterov") else "")
                         if o.get("kind") == "sgd" else md.DASH),
            "batch": "full" if "batch_size" in o and o["batch_size"] is None
            else o.get("batch_size", batch),
            "dropout": o.get("dropout", model_dropout),
        })
    return md.markdown_table(pd.DataFrame(rows), align=["l", "l"] + ["r"] * 5)


def _weight_decay_trend(cells: pd.DataFrame, params: dict[str, Any]) -> str | None:
    """Steps to 99% against weight decay over the variants that differ from adamw only there."""
    opts = params.get("optimizers") or {}
    base = {k: v for k, v in opts.get("adamw", {}).items() if k != "weight_decay"}
    same = [v for v in cells["optimizer"]
            if {k: x for k, x in opts.get(v, {}).items() if k != "weight_decay"} == base]
    rows = cells[cells["optimizer"].isin(same)]
    if len(rows) < 2:
        return None
    wd = rows["optimizer"].map(lambda v: float(opts[v]["weight_decay"]))
    censored = int(rows["n_censored"].sum())
    return (f"Over AdamW with weight decay {', '.join(f'{w:g}' for w in sorted(wd))} (all else "
            f"equal), mean updates to 99% {trend(wd, rows['steps_to_99_mean'].astype(float))}"
            + (f" ({censored} censored seeds counted at the budget)." if censored else "."))


def optimizer_body(ctx: Context, study: StudyTables) -> list[str]:
    cells, budget = study.cells, ctx.budget("optimizer")
    variants = list(dict.fromkeys(cells["optimizer"]))
    lines = ["The variants (`optimizers` in params):", "", _variant_table(ctx.params, variants),
             "", study_table(cells, "optimizer", extra=_train_fit_column(study.runs, "optimizer")),
             *censoring_and_fits(study, budget),
             *_steps_bars(ctx, cells, "optimizer", "optimizer", budget,
                          "Optimizer study: updates to 99% validation accuracy"),
             *_curves(ctx, study, "optimizer", "optimizer",
                      "Optimizer study: accuracy vs updates, one colour per variant"),
             "", "### Published", "", *claims.quotes(claims.OPTIMIZER_QUOTES),
             "", "### Reading", "", factor_reading(cells, "optimizer", budget=budget)]
    for task, group in cells.groupby("task", sort=False):
        by = group.set_index("optimizer")
        if {"adamw", "adam"} <= set(by.index):
            w, a = by.loc["adamw"], by.loc["adam"]
            lines.append(f"- **{task}**, AdamW (weight decay) vs Adam (none): "
                         f"{md.cell_steps(w)} vs {md.cell_steps(a)} updates to 99%, final "
                         f"validation accuracy {w['final_val_acc_mean']:.3f} vs "
                         f"{a['final_val_acc_mean']:.3f}.")
    wd = _weight_decay_trend(cells, ctx.params)
    return lines + ([f"- {wd}"] if wd else [])


def study_factor(params: dict[str, Any], study: str) -> str:
    """The column of a study's factor in its tables (the last part of its key)."""
    return studies(params)[study].factor.split(".")[-1]


def _p_of(params: dict[str, Any], study: str, cell: dict[str, Any]) -> Any:
    try:
        return studies(params)[study].config(params, cell["task"], cell[study_factor(
            params, study)]).data.p
    except (ConfigError, KeyError):
        return md.DASH


def data_fraction_body(ctx: Context, study: StudyTables) -> list[str]:
    cells, budget = study.cells, ctx.budget("data_fraction")
    p = {(c["task"], c["train_fraction"]): _p_of(ctx.params, "data_fraction", {
        "task": c["task"], "train_fraction": c["train_fraction"]}) for _, c in cells.iterrows()}
    default_p = (ctx.params.get("data") or {}).get("p")
    odd = {f: v for (_, f), v in p.items() if v != default_p}
    fig = metric_vs_factor(cells, "train_fraction", ["steps_to_99", "relative_gap"],
                           labels={"steps_to_99": "updates to 99% validation accuracy",
                                   "relative_gap": "relative gap τ_val/τ_train − 1"},
                           limits={"steps_to_99": budget},
                           notes={f: f"p = {v}" for f, v in odd.items()},
                           title="Training fraction: updates to 99% and relative gap")
    lines = [study_table(cells, "train_fraction",
                         extra={"p": lambda c: p[(c["task"], c["train_fraction"])]}),
             *censoring_and_fits(study, budget), "",
             ctx.figure("data_fraction_trends", fig, "Steps to 99% and relative gap vs fraction"),
             *_curves(ctx, study, "data_fraction", "train_fraction",
                      "Training fraction: accuracy vs updates")]
    if odd:
        lines += ["", "Cells at another modulus (`studies.data_fraction.p_by_fraction`): "
                  + ", ".join(f"fraction {f:g} runs at p = {v}" for f, v in odd.items())
                  + " — seed 002's no-grokking case."]
    lines += ["", "### Published", "",
              *[f"- fraction {f:g}: {text}" for f, text in claims.FRACTION_CLAIMS.items()],
              "", "### Reading", "",
              factor_reading(cells, "train_fraction", budget=budget, numeric=True)]
    for task, group in cells.groupby("task", sort=False):
        full = group[group["n_censored"] == 0]["train_fraction"]
        none = group[group["n_censored"] >= group["n_seeds"]]["train_fraction"]
        text = (f"smallest fraction at which every seed grokked: {full.min():g}" if len(full)
                else "no fraction grokked in every seed")
        if len(none):
            text += f"; no seed grokked at {', '.join(f'{f:g}' for f in none)}"
        for f, v in odd.items():
            row = group[group["train_fraction"] == f]
            if len(row):
                k = int(row.iloc[0]["n_seeds"] - row.iloc[0]["n_censored"])
                text += (f"; at {f:g} (p = {v}) {k} of {int(row.iloc[0]['n_seeds'])} seeds "
                         f"grokked — seed 002 saw none: "
                         + ("agrees" if k == 0 else "disagrees"))
        lines.append(f"- **{task}**: {text}.")
    return lines


def with_examples(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` plus ``examples_to_99_*``: updates to 99% times the batch size."""
    b = cells["batch_size"].astype(float)
    return cells.assign(**{f"examples_to_99_{k}": cells[f"steps_to_99_{k}"] * b
                           for k in ("mean", "sd", "ci_low", "ci_high")})


def post_grok_volatility(histories: pd.DataFrame, factor: str) -> dict[tuple[Any, Any], float]:
    """Per cell, the mean over seeds of the standard deviation of validation accuracy after it
    first reached 99% (seeds that never did are left out)."""
    out: dict[tuple[Any, Any], float] = {}
    for key, g in histories.groupby(["task", factor], sort=False):
        sds = []
        for _, h in g.sort_values("step").groupby("seed"):
            hit = np.flatnonzero(h["val_acc"].to_numpy() >= 0.99)
            if hit.size and hit[0] + 1 < len(h):
                sds.append(float(h["val_acc"].iloc[hit[0]:].std(ddof=1)))
        out[key] = float(np.mean(sds)) if sds else float("nan")
    return out


def batch_size_body(ctx: Context, study: StudyTables) -> list[str]:
    cells, budget = with_examples(study.cells), ctx.budget("batch_size")
    vol = post_grok_volatility(study.histories, "batch_size") if study.histories is not None \
        else {}

    def examples(c: pd.Series) -> str:
        return md.fmt_steps(c["examples_to_99_mean"], c["examples_to_99_ci_low"],
                            c["examples_to_99_ci_high"], n_censored=int(c["n_censored"]),
                            n_seeds=int(c["n_seeds"]))

    extra = {"examples to 99%": examples,
             "examples in budget": lambda c: f"{budget * int(c['batch_size'])}"}
    if vol:
        extra["val acc sd after 99%"] = lambda c: (
            f"{vol[(c['task'], c['batch_size'])]:.4f}"
            if np.isfinite(vol.get((c["task"], c["batch_size"]), np.nan)) else md.DASH)
    sizes = sorted(cells["batch_size"].astype(int).unique())
    fig = metric_vs_factor(
        cells, "batch_size", ["steps_to_99", "examples_to_99"], logx=True,
        labels={"steps_to_99": "updates to 99% validation accuracy",
                "examples_to_99": "examples seen to 99% (updates × batch)"},
        limits={"steps_to_99": budget,
                "examples_to_99": pd.Series([budget * b for b in sizes], index=sizes)},
        title="Batch size: cost of grokking in updates and in examples")
    lines = ["Every batch size runs the same number of updates, so larger batches see more "
             "examples; the table gives both costs.", "",
             study_table(cells, "batch_size", ("steps to 99%", "grokked", "final val acc",
                                               "relative gap", "relative sharpness", "fits ok"),
                         extra=extra),
             *censoring_and_fits(study, budget), "",
             ctx.figure("batch_size_trends", fig, "Steps and examples to 99% vs batch size"),
             *_curves(ctx, study, "batch_size", "batch_size", "Batch size: accuracy vs updates"),
             "", "### Published", "", *claims.quotes(claims.BATCH_QUOTES),
             "", "### Reading", "",
             factor_reading(cells, "batch_size", budget=budget, numeric=True)]
    for task, group in cells.groupby("task", sort=False):
        full = group[group["n_censored"] == 0]
        if len(full) >= 2:
            u = full.loc[full["steps_to_99_mean"].idxmin()]
            e = full.loc[full["examples_to_99_mean"].idxmin()]
            lines.append(f"- **{task}**: fewest updates to 99% at batch {int(u['batch_size'])}, "
                         f"fewest examples at batch {int(e['batch_size'])}.")
        v = [(b, vol.get((task, b), np.nan)) for b in group["batch_size"]]
        if sum(np.isfinite(x) for _, x in v) >= 2:
            lines.append(f"- **{task}**: after first reaching 99%, the standard deviation of "
                         f"validation accuracy {trend([b for b, _ in v], [x for _, x in v])} "
                         "(seed 002 reports more volatility with larger batches).")
    return lines


def multivariate_body(ctx: Context, study: StudyTables) -> list[str]:
    cells, budget = study.cells, ctx.budget("multivariate")
    n_train = _per_cell(study.runs, "operands", lambda g: int(g["n_train"].iloc[0]))
    configs = {}
    for _, c in cells.iterrows():
        cell = {"task": c["task"], "operands": int(c["operands"])}
        try:
            configs[(c["task"], c["operands"])] = studies(ctx.params)["multivariate"].config(
                ctx.params, cell["task"], cell["operands"])
        except (ConfigError, KeyError):
            continue
    extra = {"p": lambda c: configs[(c["task"], c["operands"])].data.p
             if (c["task"], c["operands"]) in configs else md.DASH,
             "training equations": lambda c: n_train.get((c["task"], c["operands"]), md.DASH)}
    lines = [study_table(cells, "operands", extra=extra), *censoring_and_fits(study, budget),
             *_curves(ctx, study, "multivariate", "operands",
                      "Multivariate addition: accuracy vs updates per K"),
             "", "### Published", "", *claims.quotes(claims.MULTIVARIATE_QUOTES),
             "", "### Reading", "", factor_reading(cells, "operands", budget=budget)]
    for _, c in cells.iterrows():
        cfg = configs.get((c["task"], c["operands"]))
        if cfg is None:
            continue
        d, m, t = cfg.data, cfg.model, cfg.train
        done = (f"reached 99% validation accuracy in every seed after {md.cell_steps(c)} updates"
                if c["n_censored"] == 0 else
                f"grokked in {grokked(c)} seeds within {budget} updates "
                f"(final validation accuracy {c['final_val_acc_mean']:.3f}, training "
                f"{c['final_train_acc_mean']:.3f})")
        k = int(c["operands"])
        lines.append(f"- K = {k} (`{c['cell']}`): at p = {d.p} ({d.p ** k} equations), "
                     f"training fraction {d.train_fraction:g}, {m.arch} with {m.layers} layers, "
                     f"batch {t.batch_size}, {t.steps} updates, it {done}.")
    if configs:
        first = describe_config(next(iter(configs.values())), ctx.params["seeds"])
        lines += ["", f"All settings of the first cell: {first}"]
    return lines
