"""Mechanism events of a measured run, as censored times (Nanda et al.'s phases).

From a seed's progress measures (``measures.csv``, :mod:`groklab.fourier`) and history:

* **circuit formation**: the first measured step whose restricted loss is at most
  ``circuit_below`` nats: the key frequencies alone then predict the answer well;
* **cleanup**: the first measured step whose excluded loss is at least ``cleanup_above``
  nats while the model itself still fits its training split (training-curve accuracy at
  that step >= 99%) and has at least one key frequency: the training data are then fit
  through the key frequencies, no longer by memorised components. Both conditions matter:
  an untrained model's excluded loss is about log p, and without key frequencies the
  excluded loss *is* the training loss, so a loss spike (training accuracy falling for a
  few evaluations, common at weight decay 1) would otherwise count as cleanup.

A seed without the event by its last update is censored at the budget (``*_reached``
False), as steps to 99% are, so the survival machinery (log-rank, Kaplan–Meier,
:func:`groklab.summary.compare_cells`) applies unchanged. ``*_lag`` is the event's step
minus the validation jump's (first step at 99% validation accuracy): negative when the
event came first; NaN unless both happened. Nanda et al.'s ordering is circuit formation,
then cleanup, then (or with) the validation jump: both lags <= 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from groklab.metrics import Crossing, steps_to_threshold

if TYPE_CHECKING:
    import pandas as pd

MECHANISM_COLUMNS = ("circuit_step", "circuit_reached", "cleanup_step", "cleanup_reached",
                     "circuit_lag", "cleanup_lag")
# Which flag says an event time is observed rather than censored (summary.CENSORING's form).
EVENT_CENSORING = {"circuit_step": "circuit_reached", "cleanup_step": "cleanup_reached"}


@dataclass(frozen=True)
class Thresholds:
    """params.yaml ``analysis.circuit_below`` / ``analysis.cleanup_above`` (nats)."""

    circuit_below: float = 0.5
    cleanup_above: float = 1.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Thresholds:
        a = params["analysis"]
        return cls(float(a["circuit_below"]), float(a["cleanup_above"]))


def first_at_most(steps: Any, values: Any, threshold: float, budget: int) -> Crossing:
    """First step with ``value <= threshold`` (NaN never counts), else censored at budget."""
    return steps_to_threshold(steps, -np.asarray(values, dtype=float), -threshold, budget)


def events(measures: pd.DataFrame, history: pd.DataFrame, budget: int,
           thresholds: Thresholds = Thresholds(),  # noqa: B008 - frozen
           val_threshold: float = 0.99) -> dict[str, Any]:
    """One seed's circuit-formation and cleanup times, censoring flags and lags."""
    m = measures.sort_values("step")
    h = history.sort_values("step")
    circuit = first_at_most(m.step, m.restricted_loss, thresholds.circuit_below, budget)
    fitted = m.merge(h[["step", "train_acc"]], on="step", how="left")
    ok = (fitted.train_acc >= val_threshold) & (fitted.n_key > 0)
    cleanup = steps_to_threshold(fitted.step, fitted.excluded_loss.where(ok),
                                 thresholds.cleanup_above, budget)
    val = steps_to_threshold(h.step, h.val_acc, val_threshold, budget)

    def lag(event: Crossing) -> float:
        return float(event.step - val.step) if event.reached and val.reached else math.nan

    return {"circuit_step": circuit.step, "circuit_reached": circuit.reached,
            "cleanup_step": cleanup.step, "cleanup_reached": cleanup.reached,
            "circuit_lag": lag(circuit), "cleanup_lag": lag(cleanup)}


def seed_events(measures: pd.DataFrame, history: pd.DataFrame, budget: int,
                thresholds: Thresholds = Thresholds()  # noqa: B008 - frozen
                ) -> dict[int, dict[str, Any]]:
    """:func:`events` for every seed of a cell's measures.csv and history.csv."""
    return {int(seed): events(m, history[history.seed == seed], budget, thresholds)
            for seed, m in measures.groupby("seed", sort=False)}
