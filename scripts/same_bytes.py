"""Check that a code change leaves trained cells byte for byte as they were, before its
results are re-recorded (`dvc commit`) instead of retrained.

    python scripts/same_bytes.py 5667807 baseline@x_plus_y augmentation@x_minus_y-combined30

trains each named cell twice on this machine, with the same thread count and a short budget
(``--steps``): once with the code of the given commit (its ``src/`` and ``params.yaml``,
from git) and once with the working tree's, each in a fresh temporary folder, tracking off.
It then compares every file the stage wrote (``models/...`` and ``checkpoints/...``) and
prints one line per cell, ``same`` or the files that differ; the exit status is 1 when any
cell differs. A difference means the change is a training change: retrain, do not re-record.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def checkout(commit: str, into: Path) -> Path:
    """``src/`` and ``params.yaml`` of ``commit``, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "--",
                              "src", "params.yaml"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def train_cell(code: Path, params: Path, stage: str, steps: int, threads: int,
               where: Path) -> Path:
    """Run the stage ``stage`` with ``code``'s src and ``params`` (budget ``steps``) in the
    fresh folder ``where``; returns it."""
    where.mkdir(parents=True)
    values = yaml.safe_load(params.read_text())
    values["train"]["steps"] = steps
    for study in values["studies"].values():  # a study's own budget is shortened too
        study.get("settings", {}).get("train", {}).pop("steps", None)
    (where / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(code / "src"), "DVC_STAGE": stage,
           "GROKLAB_TRACKING": "off", "GROKLAB_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "groklab.stages.train"], cwd=where, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return where


def differing(a: Path, b: Path) -> list[str]:
    """Relative paths of the files that differ between the trees ``a`` and ``b`` (or exist in
    only one)."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    out = sorted(str(p) for p in files_a ^ files_b)
    out += sorted(str(p) for p in files_a & files_b
                  if not filecmp.cmp(a / p, b / p, shallow=False))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", help="the commit whose code produced the recorded results")
    parser.add_argument("stages", nargs="+", help="stage names, e.g. baseline@x_plus_y")
    parser.add_argument("--steps", type=int, default=300, help="updates per cell (300)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (1)")
    args = parser.parse_args(argv)
    status = 0
    with tempfile.TemporaryDirectory(prefix="same-bytes-") as tmp:
        old = checkout(args.commit, Path(tmp) / "old")
        for stage in args.stages:
            runs = [train_cell(code, code / "params.yaml", stage, args.steps, args.threads,
                               Path(tmp) / side / stage)
                    for side, code in (("then", old), ("now", ROOT))]
            diff = [p for p in differing(*runs) if p != "params.yaml"]
            print(f"{stage}: " + ("same" if not diff else "DIFFERS: " + ", ".join(diff)))
            status |= bool(diff)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
