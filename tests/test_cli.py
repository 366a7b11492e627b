"""``groklab run`` as a user calls it: a real subprocess, files on disk, clear errors."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from groklab.checkpoint import load_model


def groklab(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "groklab.cli", *args], capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_run_writes_history_checkpoint_and_prints_json(tmp_path):
    out = tmp_path / "run"
    proc = groklab("run", "--task", "x_div_y", "--aug", "negation", "--p", "11", "--steps", "20",
                   "--batch-size", "32", "--eval-every", "5", "--seed", "3", "--out", str(out))
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("steps_to_99", "grokked", "max_val_acc_rate", "final_val_acc", "final_train_acc",
                "val_fit_ok", "val_fit_reason", "relative_gap", "val_reachable", "clean_val_acc"):
        assert key in summary
    assert summary["seed"] == 3 and 0 < summary["val_reachable"] < 1
    history = pd.read_csv(out / "history.csv")
    assert history.step.tolist() == [0, 5, 10, 15, 20]
    model = load_model(torch.load(out / "seed3.pt"))
    assert model(torch.tensor([[1, 11, 2, 12]])).shape == (1, 11)
    assert json.loads((out / "summary.json").read_text())["seed"] == 3


@pytest.mark.parametrize("args, words", [
    (["--task", "x_mod_y"], ["x_mod_y", "x_plus_y"]),
    (["--aug", "mirror"], ["mirror", "combined30"]),
    (["--arch", "gru"], ["gru", "transformer"]),
    (["--train-fraction", "1.2"], ["train_fraction=1.2", "between 0 and 1"]),
    (["--task", "x_div_y", "--p", "91"], ["p=91", "prime"]),
    (["--steps", "0"], ["steps=0", "positive"]),
    (["--task", "parity", "--concealed-bits", "4", "--aug", "negation"], ["negation", "parity"]),
    (["--task", "parity"], ["concealed_bits=0", "4 training and 4 validation",
                            "concealed_bits >= 1"]),
    (["--seed", "-1"], ["seed=-1", "from 0 to 4294967295"]),
    (["--task", "x_div_y", "--p", "3"], ["p=3", "3 training and 3 validation", "p >= 5"]),
])
def test_bad_input_is_one_clear_error(args, words):
    proc = groklab("run", "--steps", "5", *args, check=False) if "--steps" not in args else \
        groklab("run", *args, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr
