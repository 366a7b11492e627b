"""Estimate what the default pipeline commits to git, from a small finished run.

    python benchmarks/results_size.py RUN_REPO [--params params.yaml]

RUN_REPO is a repo where `dvc repro` finished at a small configuration (the end-to-end
test's). The files whose size grows with the run are scaled by their rows: history.csv at
its bytes per row times seeds × evaluations of each trained cell of the default params
(steps / eval_every + 1; the linear model: n_points + 1), the mean curves at theirs times
the evaluations of each row of each family, the per-seed and per-cell tables at theirs
times the default rows. The rest is taken as measured, not scaled: a cell's final.csv,
summary.json, config.json and card.json (per cell, times the default cells), the figures
and the report (one figure per study and kind, whatever the steps). data/ is scaled by
equations (p² per modular task, 120² for permutation). Prints one line per part and the
total, in MB (10^6 bytes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from groklab.cells import cell_config, trained_cells  # noqa: E402
from groklab.config import LinearTeacherConfig  # noqa: E402
from groklab.params import load_params  # noqa: E402
from groklab.stages.evaluate import families, family_rows  # noqa: E402


def per_row(files: list[Path]) -> float:
    """Bytes per data row over ``files`` (header lines left out)."""
    rows = sum(max(len(f.read_text().splitlines()) - 1, 0) for f in files)
    return sum(f.stat().st_size for f in files) / max(rows, 1)


def evaluations(config) -> int:
    if isinstance(config, LinearTeacherConfig):
        return config.n_points + 1
    return config.train.steps // config.train.eval_every + 1


def estimate(run: Path, params: dict) -> dict[str, float]:
    seeds = len(params["seeds"])
    cells = trained_cells(params)
    linear = [c for c in cells if isinstance(cell_config(params, c), LinearTeacherConfig)]
    network = [c for c in cells if c not in linear]
    hist_net = per_row([p for p in run.glob("models/*/*/history.csv")
                        if "linear_teacher" not in p.parts])
    hist_lin = per_row(list(run.glob("models/linear_teacher/*/history.csv")))
    fixed = [p for p in run.glob("models/*/*/*") if p.name != "history.csv"]
    fixed_per_cell = sum(p.stat().st_size for p in fixed) / len(list(run.glob("models/*/*")))
    curve = per_row(list(run.glob("reports/curves/*/*.csv")))
    rows = [(family, source) for family in families(params)
            for _, source in family_rows(params, family)[1]]
    runs_row = per_row(list(run.glob("reports/tables/*_runs.csv")))
    cells_row = per_row(list(run.glob("reports/tables/*_cells.csv")))
    comparisons = sum(p.stat().st_size for p in run.glob("reports/tables/*_comparisons.csv"))

    def evals_of(cell) -> int:
        return evaluations(cell_config(params, cell))

    equations = sum(120 ** 2 if t == "permutation" else params["data"]["p"] ** 2
                    for t in params["baseline"]["tasks"])
    data_run = sum(p.stat().st_size for p in run.glob("data/*/equations.csv"))
    data_eqs = sum(max(len(p.read_text().splitlines()) - 1, 1)
                   for p in run.glob("data/*/equations.csv"))
    mb = 1e6
    return {
        "models/*/history.csv": (hist_net * seeds * sum(map(evals_of, network))
                                 + hist_lin * seeds * sum(map(evals_of, linear))) / mb,
        "models/* other files": fixed_per_cell * (len(cells) + len(params["tasks"])) / mb,
        "reports/curves": curve * sum(evals_of(source) for _, source in rows) / mb,
        "reports/tables": (runs_row * seeds * len(rows) + cells_row * len(rows)
                           + comparisons) / mb,
        "reports/figures + report.md (as measured)": (
            sum(p.stat().st_size for p in run.glob("reports/figures/*"))
            + (run / "reports/report.md").stat().st_size) / mb,
        "data/": (data_run / data_eqs * equations
                  + sum(p.stat().st_size for p in run.glob("data/*/card.json"))) / mb,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a repo with a finished small run")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml",
                        help="the configuration to estimate (default: this repo's)")
    args = parser.parse_args(argv)
    parts = estimate(args.run, load_params(args.params))
    for name, size in parts.items():
        print(f"{name:45s} {size:7.1f} MB")
    print(f"{'total':45s} {sum(parts.values()):7.1f} MB")


if __name__ == "__main__":
    main()
