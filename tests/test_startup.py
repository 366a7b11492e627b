"""Stage start-up: what importing the library costs, and the first-update timestamp."""

import logging
import subprocess
import sys
import time

import pytest
from scipy import special
from test_train import TINY

from groklab import metrics
from groklab.train import train

HEAVY = ("pandas", "scipy", "mlflow", "matplotlib", "seaborn")


def test_library_imports_leave_heavy_packages_for_later():
    """Training needs torch; pandas, scipy and the report stack load only where used."""
    code = ("import sys, groklab.train, groklab.graphed, groklab.summary, groklab.metrics, "
            "groklab.tasks, groklab.models, groklab.curriculum; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == ""


def test_erf_quartile_constant_is_erfinv_of_one_half():
    assert pytest.approx(float(special.erfinv(0.5)), rel=1e-15) == metrics._ERF_QUARTILE


@pytest.mark.parametrize("engine", ["loop", "graph_eager"])
def test_first_update_is_logged_after_the_launch_stamp(engine, monkeypatch, caplog):
    launched = time.time()
    monkeypatch.setenv("GROKLAB_T0", repr(launched))
    with caplog.at_level(logging.DEBUG, logger="groklab.train"):
        train(TINY.replace(train={"device": "cpu"}), [0], engine=engine)
    (line,) = [r.getMessage() for r in caplog.records if "first update" in r.getMessage()]
    seconds = float(line.split()[3])
    assert line.startswith("first update done ")
    assert 0 < seconds <= time.time() - launched
