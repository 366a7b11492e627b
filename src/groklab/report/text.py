"""Markdown shared by every report section: tables, numbers with intervals, censoring-aware
steps, quotes and verdicts. Pure: values in, strings out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from groklab.metrics import Trend

DASH = "—"


def missing(x: Any) -> bool:
    """None, NaN or infinite: a number that is not there."""
    try:
        return x is None or not math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def as_bool(s: pd.Series) -> pd.Series:
    """A flag column as booleans: CSV round trips can leave "True"/"False" strings (or
    1/0), and ``bool("False")`` is True."""
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "1.0"])


def markdown_table(df: pd.DataFrame, *, align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table of ``df`` (no index); numbers right-aligned.

    ``align`` gives one of "l", "r", "c" per column; missing values print as a dash.
    """
    if align is None:
        align = ["r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns]
    rule = {"l": ":---", "r": "---:", "c": ":---:"}

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return DASH
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |",
             "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def fmt_mean_ci(mean: float, ci_low: float = math.nan, ci_high: float = math.nan,
                digits: int = 0) -> str:
    """``mean ± half-width`` of the 95% interval; just the mean when there is no interval."""
    if missing(mean):
        return DASH
    if missing(ci_low) or missing(ci_high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(ci_high - ci_low) / 2:.{digits}f}"


def fmt_sig(mean: float, ci_low: float = math.nan, ci_high: float = math.nan,
            sig: int = 3) -> str:
    """``mean ± half-width`` with ``sig`` significant digits (ratios and slopes of any size)."""
    if missing(mean):
        return DASH
    half = math.nan if missing(ci_low) or missing(ci_high) else (ci_high - ci_low) / 2
    if 1e3 <= abs(mean) < 1e6:  # steps: whole numbers read better than 1.07e+04
        return f"{mean:.0f}" + ("" if math.isnan(half) else f" ± {half:.0f}")
    return f"{mean:.{sig}g}" + ("" if math.isnan(half) else f" ± {half:.2g}")


def fmt_steps(mean: float, ci_low: float, ci_high: float, *, n_censored: int,
              n_seeds: int) -> str:
    """Steps to 99%: ``mean ± half-interval``, or a lower bound ``≥ mean (k/n reached)``.

    Censored seeds are counted at the budget, so with any of them the mean only bounds the
    true mean from below and an interval around it would be misleading.
    """
    if missing(mean):
        return DASH
    if n_censored:
        return f"≥ {mean:.0f} ({n_seeds - n_censored}/{n_seeds} reached)"
    return fmt_mean_ci(mean, ci_low, ci_high)


def cell_steps(row: pd.Series, metric: str = "steps_to_99") -> str:
    """:func:`fmt_steps` of one row of a ``*_cells.csv`` table."""
    return fmt_steps(row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"],
                     n_censored=int(row["n_censored"]), n_seeds=int(row["n_seeds"]))


def metric(row: pd.Series | None, name: str, digits: int | None = None) -> str:
    """``name``'s mean ± half-interval in a cell row: fixed ``digits``, else 3 significant
    (a dash for no row)."""
    if row is None:
        return DASH
    args = (row.get(f"{name}_mean"), row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high"))
    return fmt_mean_ci(*args, digits=digits) if digits is not None else fmt_sig(*args)


def count(row: pd.Series, key: str) -> str:
    """``k/n`` seeds of a cell row (``key``: ``n_groks``, ``n_collapsed``, ``n_fit_ok``)."""
    return DASH if key not in row or missing(row[key]) else f"{int(row[key])}/{int(row['n_seeds'])}"


def reached(row: pd.Series) -> str:
    """Seeds whose validation accuracy reached 99%, as ``k/n``."""
    return f"{int(row['n_seeds'] - row['n_censored'])}/{int(row['n_seeds'])}"


def names(values: Iterable[Any]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def bullets(items: Iterable[Any]) -> list[str]:
    """One markdown bullet per item (e.g. a :class:`Verdict`)."""
    return [f"- {item}" for item in items]


def quotes(items: Sequence[dict[str, str]], sources: dict[str, str]) -> list[str]:
    """Markdown bullets of published statements (``{"source", "text"}``) with their source."""
    return [f"- {item['text']} — {sources.get(item['source'], item['source'])}"
            for item in items]


def describe_trend(t: Trend, fmt: str = ".3g") -> str:
    """A :class:`~groklab.metrics.Trend` in words."""
    if t.direction == "too few":
        return "has too few values to show a trend"
    span = (f"from {t.y_first:{fmt}} at {t.x_first:g} to {t.y_last:{fmt}} at {t.x_last:g}")
    if t.direction == "not monotonic":
        return f"goes {span}, not monotonically"
    return f"{t.direction} monotonically {span}"


def fmt_p(p: float) -> str:
    """A p-value with two significant digits; below 0.001 as "< 0.001" (never "0")."""
    if missing(p):
        return DASH
    return "< 0.001" if p < 1e-3 else f"{p:.2g}"


def p_eq(p: float) -> str:
    """``= 0.03`` or ``< 0.001``: a p-value after "p"."""
    text = fmt_p(p)
    return text if text.startswith(("<", DASH)) else f"= {text}"


NOT_TESTED = "(not tested)"


@dataclass(frozen=True)
class Verdict:
    """Our runs against one published claim: what ours show (with the numbers), what the
    paper says (with its source), whether they agree (None: the runs cannot tell), the likely
    cause, said only where they disagree, and ``caveat``: a difference in settings (e.g. the
    paper's budget against ours), said whatever the verdict. ``agrees`` must come from a
    test or a count over enough seeds (:func:`groklab.report.study.majority`); ``basis`` says
    which, and is printed with it."""

    ours: str
    claim: str
    agrees: bool | None
    cause: str = ""
    caveat: str = ""
    basis: str = ""

    def __str__(self) -> str:
        stand = ("cannot tell" if self.agrees is None else "**agree**" if self.agrees else
                 "**disagree**" + (f"; likely cause: {self.cause}" if self.cause else ""))
        basis = f" ({self.basis})" if self.basis else ""
        caveat = f" Caveat: {self.caveat}." if self.caveat else ""
        return f"{self.ours}; {self.claim}: our runs {stand}{basis}.{caveat}"


def budget_caveat(paper: int | None, ours: int) -> str:
    """A caveat whenever the paper's budget (updates) differs from ours; "" when equal or
    unknown."""
    if paper is None or int(paper) == int(ours):
        return ""
    return f"the paper's budget is {int(paper)} updates, ours {int(ours)}"


def frac(values: np.ndarray | pd.Series) -> str:
    """``k of n`` true values."""
    v = np.asarray(values, dtype=bool)
    return f"{int(v.sum())} of {v.size}"
