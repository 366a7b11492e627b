"""Stage start-up: what importing the library costs, and the first-update timestamp."""

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from scipy import special
from test_train import TINY

from groklab import metrics
from groklab.train import train

HEAVY = ("pandas", "scipy", "mlflow", "matplotlib", "seaborn")
ROOT = Path(__file__).resolve().parents[1]


def test_library_imports_leave_heavy_packages_for_later():
    """Training needs torch; pandas, scipy and the report stack load only where used."""
    code = ("import sys, groklab.train, groklab.graphed, groklab.summary, groklab.metrics, "
            "groklab.tasks, groklab.models, groklab.curriculum; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == ""


def loaded_by_stage(args: list[str], cwd: Path, watched: tuple[str, ...]) -> list[str]:
    """Run the training stage (``python -m groklab.stages.train ARGS``, tracking off) in
    ``cwd``; which of the ``watched`` modules it loaded, success or not."""
    module = "groklab.stages.train"
    code = ("import runpy, sys\n"
            f"sys.argv = [{module!r}, *sys.argv[1:]]\n"
            "try:\n"
            f"    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
            "finally:\n"
            f"    print('loaded:', *(m for m in {watched!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, "GROKLAB_TRACKING": "off"},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1].split()[1:]


@pytest.mark.parametrize("args, written", [
    (["experiment", "x_plus_y"], "models/experiment/x_plus_y/source.json"),
    (["linear_teacher", "linear_regression", "0.5"],
     "models/linear_teacher/linear_regression-0.5/summary.json"),
])
def test_stages_that_train_no_network_never_import_torch(args, written, tmp_path):
    """An experiment@ stage at the paper defaults and a linear student-teacher cell run the
    real stage process (params.yaml as shipped) without paying torch's import."""
    shutil.copy(ROOT / "params.yaml", tmp_path)
    assert loaded_by_stage(args, tmp_path, ("torch", "mlflow")) == []
    assert (tmp_path / written).is_file()


def test_a_training_stage_never_imports_torch_dynamo(tmp_path):
    """torch's optimisers import torch._dynamo (about 1 s) unless stepped as groklab.optim
    steps them; nor does anything else a 10-update training stage runs."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["seeds"], params["train"]["steps"] = [0], 10
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    watched = ("torch", "torch._dynamo", "mlflow")
    assert loaded_by_stage(["baseline", "x_plus_y"], tmp_path, watched) == ["torch"]
    assert (tmp_path / "checkpoints/baseline/x_plus_y/seed0.pt").is_file()


def test_analysis_stages_import_without_torch():
    code = ("import sys, groklab.stages.evaluate, groklab.stages.report; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "False"


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
