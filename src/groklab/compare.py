"""``make compare``: a commit and its DVC experiments side by side, one row per value that
differs between them.

``dvc exp show`` gives every param and metric a column, and prefixes a metric key that two
files share (``steps_to_99`` is in every cell's file) with the file's path, so one
experiment over four tasks is a table several hundred characters wide. Here the table is
turned around: a column per experiment, a row per param or metric whose value is not the
same in all of them (metrics named ``<family>/<cell>: <key>``, the file's path under
``reports/metrics`` without ``.json``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

MISSING = "-"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def values_of(data: Mapping[str, Any]) -> dict[str, Any]:
    """One revision's params (by dotted key) and metrics (``<file>: <dotted key>``, the file
    named by :func:`metric_file`), from the ``data`` of an entry of ``dvc exp show --json``."""
    out: dict[str, Any] = {}
    for path, content in (data.get("params") or {}).items():
        prefix = "" if path == "params.yaml" else f"{path}:"
        out.update(flatten((content or {}).get("data") or {}, prefix))
    for path, content in (data.get("metrics") or {}).items():
        for key, value in flatten((content or {}).get("data") or {}).items():
            out[f"{metric_file(path)}: {key}"] = value
    return out


def metric_file(path: str) -> str:
    """A metrics file's short name: its path under ``reports/metrics/`` without the suffix
    (``experiment/x_plus_y``); other files by their stem."""
    parts = PurePosixPath(path).with_suffix("").parts
    head = parts[:-1]
    if "metrics" not in head:
        return parts[-1]
    at = len(head) - 1 - head[::-1].index("metrics")  # the last folder named metrics
    return "/".join(parts[at + 1:])


def revisions(shown: list[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(label, values)`` of each baseline commit and then its experiments, oldest first;
    the workspace and experiments without results (queued, failed) are left out."""
    out = []
    for commit in shown:
        if commit["rev"] == "workspace" or not commit.get("data"):
            continue
        out.append((commit.get("name") or commit["rev"][:7], values_of(commit["data"])))
        exps = []
        for exp in commit.get("experiments") or []:
            tip = exp["revs"][0]
            if tip.get("error") or not tip.get("data"):
                continue
            exps.append((tip["data"].get("timestamp") or "", exp.get("name") or tip["rev"][:7],
                         values_of(tip["data"])))
        out += [(label, values) for _, label, values in sorted(exps, key=lambda e: e[0])]
    return out


def differing(columns: list[tuple[str, dict[str, Any]]], keep: str | None = None
              ) -> list[tuple[str, list[Any]]]:
    """The rows ``(name, value per column)`` whose values are not all equal (params first,
    in file order), restricted to names matching ``keep`` when given."""
    names: dict[str, None] = {}
    for _, values in columns:
        names.update(dict.fromkeys(values))
    ordered = sorted(names, key=lambda n: ": " in n)  # params, then metrics; stable
    pattern = re.compile(keep) if keep else None
    rows = []
    for name in ordered:
        if pattern and not pattern.search(name):
            continue
        row = [values.get(name, MISSING) for _, values in columns]
        if len({json.dumps(v, sort_keys=True) for v in row}) > 1:
            rows.append((name, row))
    return rows


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits (whole numbers as integers); lists as YAML does."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def render(labels: Iterable[str], rows: list[tuple[str, list[Any]]]) -> str:
    """A plain-text table: the row names, then one right-aligned column per label."""
    labels = list(labels)
    cells = [[fmt(v) for v in row] for _, row in rows]
    name_width = max([len(n) for n, _ in rows] + [0])
    widths = [max([len(label)] + [len(c[i]) for c in cells]) for i, label in enumerate(labels)]
    lines = [" " * name_width + "".join(f"  {label:>{w}}" for label, w in zip(labels, widths,
                                                                           strict=True))]
    for (name, _), row in zip(rows, cells, strict=True):
        lines.append(f"{name:<{name_width}}" + "".join(f"  {c:>{w}}" for c, w in zip(
            row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def compare(shown: list[Mapping[str, Any]], keep: str | None = None) -> str:
    """The text ``make compare`` prints for the output of ``dvc exp show --json``."""
    columns = revisions(shown)
    if not columns:
        return "No commit with results to compare."
    if len(columns) == 1:
        return (f"{columns[0][0]} has no experiments yet: "
                "`dvc exp run -S aug=combined30` runs one.")
    rows = differing(columns, keep)
    if not rows:
        return "The experiments and their commit have the same params and metrics."
    return render([label for label, _ in columns], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", metavar="REGEX",
                        help="only rows whose name matches, e.g. 'aug|steps_to_99'")
    parser.add_argument("--rev", metavar="COMMIT",
                        help="the commit whose experiments to show (default: HEAD)")
    args = parser.parse_args(argv)
    cmd = ["dvc", "exp", "show", "--json", *(["--rev", args.rev] if args.rev else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"groklab compare: `{' '.join(cmd)}` failed:\n{proc.stderr.strip()}")
    print(compare(json.loads(proc.stdout), args.keep))


if __name__ == "__main__":
    main()
