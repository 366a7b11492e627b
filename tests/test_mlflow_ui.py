"""The MLflow UI as a researcher sees it, in a real headless Chromium on a real store.

Runs scripts/mlflow_ui_screenshot.py: real stage commands write a SQLite store, `mlflow ui`
serves it, Chromium opens the link groklab.tracking.ui_url gives, and the browser measures
what the page shows.
"""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow_ui_screenshot import chromium

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium() is None,
                                 reason="Chromium is not installed (Debian: apt-get install "
                                        "chromium; or set CHROMIUM to its path)")]

NAMES = {"x_plus_y · reversal", "x_plus_y · negation", "x_plus_y · combined30"}
FIRST = ["metrics.`steps_to_99_mean`", "metrics.`clean_val_acc_mean`",
         "metrics.`final_val_acc_mean`"]


def test_experiment_page_opens_on_runs_with_readable_names_and_headline_columns(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "mlflow_ui_screenshot.py"),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=240,
                          env={"GROKLAB_THREADS": "1", **os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = json.loads(proc.stdout.strip().splitlines()[-1])

    # The runs table, not the GenAI overview or the traces quick-start.
    assert page["heading"] == "Runs" and page["title"].startswith("Runs")
    assert set(page["logged_runs"]) == NAMES
    # Every cell run listed under its task · variant name, none cut short by the column.
    assert sorted(r["name"] for r in page["runs"]) == sorted(NAMES)
    assert [r for r in page["runs"] if r["truncated"]] == []

    # The headline metrics are the first columns after the pinned name and date, in the
    # order the view gives, fully inside the visible table at 1600x900.
    columns = [c["id"] for c in page["columns"]]
    assert columns[:2] == ["attributes.`Run Name`", "runDateAndNestInfo"]
    assert columns[2:5] == FIRST
    shown = {c["id"]: c for c in page["columns"]}
    assert all(shown[c]["visible"] and not shown[c]["truncated"] for c in FIRST), page["columns"]
    assert len(page["metric_cells"]) == len(NAMES)
    for row in page["metric_cells"]:
        assert float(row["metrics.`steps_to_99_mean`"]) > 0
        assert 0 <= float(row["metrics.`frac_groks`"]) <= 1

    png = Path(page["png"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1600, 900)  # IHDR width, height
    assert "x_plus_y · combined30" in Path(page["html"]).read_text()
