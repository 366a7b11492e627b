"""A study's tests on the cells trained so far, while the rest of the pipeline is still to
run (`evaluate` reads every cell, so it waits for all of them).

    python scripts/study_so_far.py augmentation

reads each of the study's cells (and the base runs standing in for its default value) whose
results are in models/ and were trained with exactly the configuration params.yaml gives
them now (config.json against groklab.cells.cell_config; a stale or foreign folder is left
out and named), and prints, as the report prints them, their per-cell table
(groklab.report.study.study_table) and evaluate's comparisons on them
(groklab.report.study.comparison_reading): per task, the exact log-rank test and the
log-normal AFT time ratio; across the tasks present, the log-rank stratified by task; each
verdict with the test that decided it and the smallest p that test could give at its n.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from groklab.cells import Cell, cell_config, config_key, studies
from groklab.params import PARAMS_FILE, load_params
from groklab.report.study import comparison_reading, study_table
from groklab.stages.evaluate import (
    comparisons,
    evaluate_family,
    family_rows,
    load_config,
    source_dir,
)


def current(params: dict, models: Path, cell: Cell) -> bool | None:
    """True: ``cell``'s results are in ``models`` and match params; False: they are there but
    were trained with another configuration; None: not trained yet."""
    path = source_dir(models, cell)
    if not (path / "history.csv").exists():
        return None
    config, seeds = load_config(path)
    return config_key(config, seeds) == config_key(cell_config(params, cell), params["seeds"])


def machines(models: Path, cells: list[Cell]) -> str:
    """Where the cells ran, e.g. ``NVIDIA H200, torch 2.11.0+cu130: 14 cells``."""
    seen: dict[str, int] = {}
    for cell in cells:
        m = json.loads((source_dir(models, cell) / "summary.json").read_text())["machine"]
        where = (f"{m['gpu'] or m['cpu']}" + (f" ({m['threads']} threads)" if m["threads"] else "")
                 + (f", torch {m['torch']}" if m["torch"] else ", no torch"))
        seen[where] = seen.get(where, 0) + 1
    return "; ".join(f"{where}: {n} cells" for where, n in seen.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="a study of params.yaml, e.g. augmentation")
    parser.add_argument("--params", default=PARAMS_FILE)
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    known = studies(params)
    if args.study not in known:
        print(f"study={args.study!r} is not in {args.params}; choose one of: "
              f"{', '.join(known)}", file=sys.stderr)
        return 2
    state = {source: current(params, args.models, source)
             for _, source in known[args.study].rows(params)}
    for source, ok in state.items():
        if ok is False:
            print(f"left out: {source.stage} (trained with another configuration)",
                  file=sys.stderr)
    have = [s.stage for s, ok in state.items() if ok]
    missing = [s.stage for s, ok in state.items() if ok is None]
    print(f"{len(have)} of {len(state)} cells trained"
          + (f"; not yet: {', '.join(missing)}" if missing else ""))
    if not have:
        return 0
    print(f"ran on: {machines(args.models, [s for s, ok in state.items() if ok])}\n")
    runs, cells, _ = evaluate_family(params, args.study, args.models,
                                     keep=lambda s: bool(state[s]))
    factor, _ = family_rows(params, args.study)
    print(study_table(cells, factor), end="\n\n")
    per_task, across = comparisons(params, args.study, runs)
    print("\n".join(comparison_reading(per_task, across)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
