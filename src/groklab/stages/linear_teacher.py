"""DVC stage `linear_teacher`: closed-form curves of the linear student-teacher sweep (seed 004).

Reads ``studies.linear_teacher`` (``lams``, ``seeds`` and any :class:`LinearTeacherConfig`
field but ``lam`` and ``seed``; absent fields keep the class defaults), computes the
gradient-flow curves of every (lam, seed) and writes ``<out>/curves.csv`` (one row per lam,
seed and recorded step) and ``<out>/config.json`` (the settings used).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from groklab.config import ConfigError
from groklab.linear_teacher import (
    STUDY,
    LinearTeacherConfig,
    summarize_sweep,
    sweep_table,
)
from groklab.params import load_params
from groklab.stages.common import fail_cleanly, tracker_for
from groklab.stages.outputs import atomic_dir, write_json

SWEPT = ("lam", "seed")  # set per run from `lams` and `seeds`, not as single values
LOGGED = ("relative_gap", "relative_sharpness", "absolute_sharpness")  # per-lam means to MLflow


def study_settings(params: Mapping[str, Any]) -> tuple[list[float], list[int], LinearTeacherConfig]:
    """``(lams, seeds, base config)`` from ``params["studies"]["linear_teacher"]``.

    ``seeds`` defaults to the shared ``seeds``, ``lams`` to the class default ``lam``.
    """
    spec = dict((params.get("studies") or {}).get(STUDY) or {})
    lams = spec.pop("lams", [LinearTeacherConfig.lam])
    seeds = spec.pop("seeds", params.get("seeds", [LinearTeacherConfig.seed]))
    if not isinstance(lams, list) or not isinstance(seeds, list):
        raise ConfigError(f"studies.{STUDY}: `lams` and `seeds` must be lists, got "
                          f"{lams!r} and {seeds!r}")
    lams, seeds = [float(v) for v in lams], [int(v) for v in seeds]
    fields = {f.name for f in dataclasses.fields(LinearTeacherConfig)} - set(SWEPT)
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ConfigError(f"studies.{STUDY} has unknown keys {unknown}; allowed: lams, seeds, "
                          f"{', '.join(sorted(fields))}")
    if not lams or not seeds:
        raise ConfigError(f"studies.{STUDY}: `lams` and `seeds` must each list at least one value")
    try:
        base = LinearTeacherConfig(**spec)
        for lam in lams:  # every cell is checked before any is computed
            for seed in seeds:
                dataclasses.replace(base, lam=lam, seed=seed)
    except ValueError as err:
        raise ConfigError(f"studies.{STUDY}: {err}") from err
    return lams, seeds, base


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run NumPy's BLAS/LAPACK on one thread: each eigendecomposition is small, and threads
    that spin against concurrent stages made one 1000x1000 ``eigh`` 50x slower on 2 cores."""
    try:
        from threadpoolctl import threadpool_limits  # comes with mlflow (via scikit-learn)
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument("--out", type=Path, default=Path("models") / STUDY,
                        help="output directory")
    args = parser.parse_args(argv)
    lams, seeds, base = study_settings(load_params(args.params))
    settings = {k: v for k, v in dataclasses.asdict(base).items() if k not in SWEPT}

    start = time.perf_counter()
    with one_blas_thread():
        curves = sweep_table(lams, seeds, base)
    _, cells = summarize_sweep(curves)  # cheap: a few ms per fit
    elapsed = time.perf_counter() - start

    with atomic_dir(args.out) as tmp:
        curves.to_csv(tmp / "curves.csv", index=False)
        write_json(tmp / "config.json", {
            "study": STUDY, "lams": lams, "seeds": seeds, "config": settings,
            "n_train": {str(lam): dataclasses.replace(base, lam=lam).n_train for lam in lams},
        })

    with tracker_for(STUDY, STUDY, params={"lams": lams, "seeds": seeds, **settings}) as tracker:
        metrics: dict[str, float] = {"n_fit_ok": int(cells["n_fit_ok"].sum()),
                                     "seconds": elapsed}
        for row in cells.itertuples(index=False):
            metrics.update({f"{m}/{row.cell}": getattr(row, f"{m}_mean") for m in LOGGED})
        tracker.log_metrics(metrics)
        tracker.log_artifacts([args.out / "curves.csv", args.out / "config.json"])

    first, last = cells.iloc[0], cells.iloc[-1]
    print(f"{STUDY}: {len(lams)} lams x {len(seeds)} seeds in {elapsed:.1f} s, "
          f"{int(cells['n_fit_ok'].sum())}/{int(cells['n_seeds'].sum())} "
          f"runs with both erf fits ok, relative gap {first['relative_gap_mean']:.3g} "
          f"({first['cell']}) to {last['relative_gap_mean']:.3g} ({last['cell']}), "
          f"curves at {args.out / 'curves.csv'}")


if __name__ == "__main__":
    fail_cleanly(main)
