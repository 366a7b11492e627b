"""Cells side by side (`python -m groklab.repro --jobs N`) against a sequential `dvc repro`:
real git, real dvc, real MLflow, tiny parameters."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from project_copy import copy_project
from test_pipeline import BIN, TINY, pipeline_env, run

from groklab.repro import Progress, failure_line, is_cell, split_plan, threads_per_cell

# Three studies' cells (and the base cells and data they read): enough for two at a time.
TARGETS = ["augmentation", "curriculum", "architecture"]


def repro_pool(repo: Path, *args: str, check: bool = True, **env: str
               ) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "groklab.repro", *args], repo,
               pipeline_env(**env), check=check)


def lock(repo: Path) -> dict:
    path = repo / "dvc.lock"
    return yaml.safe_load(path.read_text())["stages"] if path.exists() else {}


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_plan_split_keeps_data_stages_first_and_evaluation_last():
    plan = ["generate@a", "baseline@a", "generate@b", "baseline@b", "augmentation@a-x",
            "evaluate", "report"]
    assert split_plan(plan) == (["generate@a", "generate@b"],
                                ["baseline@a", "baseline@b", "augmentation@a-x"],
                                ["evaluate", "report"])
    assert split_plan(["evaluate", "report"]) == ([], [], ["evaluate", "report"])
    assert [is_cell(s) for s in ["generate@x", "concealment@parity-4", "report"]] == \
        [False, True, False]


def test_threads_share_the_cores_and_progress_estimates_from_finished_cells():
    assert [threads_per_cell(j, cores=16) for j in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    progress = Progress(total=10, jobs=2, start=0.0)
    progress.running = 2
    progress.finished(60.0, ok=True)
    progress.finished(120.0, ok=False)
    # 8 pending, none running: mean 90 s × 8 cells ÷ 2 jobs = 360 s
    assert progress.line(now=150.0) == ("cells: 1 done, 1 failed, 0 running, 8 pending of "
                                        "10; elapsed 0:02:30, about 0:06:00 left")


@pytest.mark.parametrize("flag", ["--jobs", "--fleet-members"])
def test_a_count_below_one_is_one_line_before_anything_runs(tmp_path, flag):
    proc = subprocess.run([sys.executable, "-m", "groklab.repro", flag, "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"groklab: error: {flag} 0: must be 1 or more "
                           "(see python -m groklab.repro --help)\n")


@pytest.mark.parametrize("module", ["groklab.repro", "groklab.stages.fleet"])
def test_a_negative_snapshot_period_is_one_line_before_anything_runs(tmp_path, module):
    args = ["--snapshot-every", "-5"] + (["baseline@x_plus_y"] if "fleet" in module else [])
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("groklab: error: --snapshot-every -5: must be 0 or more seconds "
                           f"(see python -m {module} --help)\n")


def test_failure_line_is_the_stage_own_message():
    out = "Running stage 'x':\n> python -m ...\ngroklab: error: lr is NaN\nERROR: failed\n"
    assert failure_line(out) == "groklab: error: lr is NaN"
    assert failure_line("a\nlast words\n\n") == "last words"


@pytest.mark.slow
def test_side_by_side_equals_sequential_and_leaves_dvc_up_to_date(tmp_path):
    seq = copy_project(tmp_path / "seq" / "groklab", TINY)
    pool = copy_project(tmp_path / "pool" / "groklab", TINY)
    off = {"GROKLAB_TRACKING": "off"}  # MLflow's seconds a stage; test_pipeline covers it
    run([str(BIN / "dvc"), "repro", *TARGETS], seq, pipeline_env(GROKLAB_THREADS="1", **off))
    out = repro_pool(pool, "--jobs", "2", *TARGETS, **off).stdout
    assert "1 thread(s) each" in out
    assert re.search(r"cells: (\d+) done, 0 failed, 0 running, 0 pending of \1", out), out

    # DVC's record and every output of the cells: the same as the sequential run's.
    assert lock(pool) == lock(seq)
    assert files_under(pool / "models") == files_under(seq / "models")
    assert files_under(pool / "data") == files_under(seq / "data")

    status = run([str(BIN / "dvc"), "status", *TARGETS], pool, pipeline_env()).stdout
    assert "up to date" in status.lower(), status

    # A cell that fails fails the command with its one line; the cell beside it is recorded.
    params = yaml.safe_load((pool / "params.yaml").read_text())
    params["optimizers"]["blows_up"] = {**params["optimizers"]["sgd_nesterov"], "lr": 1e30}
    params["optimizers"]["adamw_lr3"] = {**params["optimizers"]["adamw"], "lr": 0.003}
    params["studies"]["optimizer"]["values"] += ["blows_up", "adamw_lr3"]
    (pool / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = repro_pool(pool, "--jobs", "2", "optimizer", check=False, **off)
    assert failed.returncode == 1
    errors = [line for line in failed.stderr.splitlines() if line.startswith("groklab:")]
    assert re.match(r"groklab: error: optimizer@x_div_y-blows_up failed: groklab: error: ",
                    errors[0]), failed.stderr
    # the cell that ran beside the failing one is recorded (which one DVC planned beside it
    # is DVC's order); the failed one is not
    beside = {"optimizer@x_div_y-sgd_nesterov", "optimizer@x_div_y-adamw_lr3"}
    assert beside & set(lock(pool))
    assert "optimizer@x_div_y-blows_up" not in lock(pool)
    assert "Traceback" not in failed.stdout + failed.stderr
    # --keep-going (the device script's): the failure stops no other cell
    again = repro_pool(pool, "--jobs", "2", "--keep-going", "optimizer", check=False)
    assert again.returncode == 1 and beside <= set(lock(pool))
    assert "optimizer@x_div_y-blows_up" not in lock(pool)


@pytest.mark.slow
def test_device_script_runs_the_pipeline_and_packs_what_a_researcher_reads(tmp_path):
    """The GPU machine's script, run here on the CPU with tiny params, in a copy of the
    working tree that is not a git repo (what the device receives), with fleets (two seeds:
    the base cells and combined30 train as one)."""
    import shutil
    import tarfile

    copy = copy_project(tmp_path / "groklab", {**TINY, "seeds": [0, 1]})
    shutil.rmtree(copy / ".git")
    out = tmp_path / "out"
    env = pipeline_env(OUT=str(out), JOBS="2", PYTHON=sys.executable, TRACKING="on",
                       FLEETS="1")
    proc = run(["bash", "scripts/device_repro.sh", "baseline", "augmentation"], copy, env)
    fleet = {"baseline@x_plus_y", "baseline@x_div_y", "augmentation@x_plus_y-combined30"}
    assert any(set(line.split(" done ")[0].split(" + ")) == fleet
               for line in proc.stdout.splitlines()), proc.stdout
    phases = re.findall(r"^phase (\w+): \d+ s", proc.stdout, re.MULTILINE)
    assert phases == ["install", "git", "mps", "repro", "pack"], proc.stdout
    packed = tmp_path / "results.tar.gz"
    packed.write_bytes(b"".join(p.read_bytes()
                                for p in sorted(out.glob("results.tar.gz.part-*"))))
    with tarfile.open(packed) as tar:
        names = set(tar.getnames())
        lock_text = tar.extractfile("dvc.lock").read().decode()
    assert "models/augmentation/x_plus_y-combined30/history.csv" in names
    assert "models/augmentation/x_plus_y-combined30/summary.json" in names
    assert not any(n.endswith(".pt") for n in names)
    assert "augmentation@x_plus_y-combined30" in yaml.safe_load(lock_text)["stages"]
    assert sorted(out.glob("device-mlflow.db.gz.part-*"))
    assert "repro exit code 0" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_interrupt_stops_the_running_cells_cleanly_and_records_the_finished(tmp_path, signum):
    """SIGINT (Ctrl-C, or the device script's time limit) or SIGTERM (`kill PID`) reaches the
    cells in their own process groups: they stop writing nothing, the command ends with 130
    in one line."""
    import time

    long = {**TINY, "train": {**TINY["train"], "steps": 1_000_000}}
    repo = copy_project(tmp_path / "groklab", long)
    proc = subprocess.Popen([sys.executable, "-m", "groklab.repro", "--jobs", "2",
                             "augmentation"], cwd=repo, env=pipeline_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = ""
    while "2 at a time" not in first:  # "<n> cells, 2 at a time, ...": the pool started
        line = proc.stdout.readline()
        assert line, "the pool never started"
        first += line
    time.sleep(10)  # both cells (baseline and combined30) are training
    t0 = time.time()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    out = first + out
    assert time.time() - t0 < 30, "the interrupt took too long to stop the cells"
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines()[-1].startswith("groklab: interrupted"), err
    assert "Traceback" not in out + err
    # the cells the interrupt stopped are said to be, not counted as failures
    assert re.search(r"^\S+ interrupted \(nothing written\) .*cells: 0 done, 0 failed",
                     out, re.MULTILINE), out
    assert "FAILED" not in out
    stages = lock(repo)
    assert not any(s.startswith(("augmentation@", "baseline@")) for s in stages)
    assert not (repo / "models/augmentation/x_plus_y-combined30").exists()
    left = subprocess.run(["pgrep", "-f", f"{repo}"], capture_output=True, text=True).stdout
    assert left == ""


@pytest.mark.slow
def test_fleets_record_what_sequential_stages_record(tmp_path):
    """``--fleets``: the cells that share a model and batch shape train as one batched model
    (groklab.fleet) and are recorded with ``dvc commit``; outputs and dvc.lock are byte for
    byte the sequential `dvc repro`'s, `dvc status` is clean, and a fleet cell that diverges
    fails with its one line while the cells beside it are recorded."""
    two = {**TINY, "seeds": [0, 1]}  # a one-seed cell trains alone (groklab.fleet.fleet_key)
    targets = ["baseline", "augmentation", "optimizer", "linear_teacher"]
    seq = copy_project(tmp_path / "seq" / "groklab", two)
    fleet = copy_project(tmp_path / "fleet" / "groklab", two)
    off = {"GROKLAB_TRACKING": "off"}
    run([str(BIN / "dvc"), "repro", *targets], seq, pipeline_env(GROKLAB_THREADS="1", **off))
    out = repro_pool(fleet, "--jobs", "2", "--fleets", *targets, **off).stdout
    # 4 transformer cells on p = 11 (two tasks: separate passes where their prefixes
    # differ) share a fleet; the two linear cells run alone: 1 fleet + 2 single cells
    assert re.search(r"^3 runs \(6 cells\), 2 at a time", out, re.MULTILINE), out
    fleet_line = next(line for line in out.splitlines() if " + " in line)
    assert fleet_line.count(" + ") == 3 and " done " in fleet_line, out
    assert lock(fleet) == lock(seq)
    assert files_under(fleet / "models") == files_under(seq / "models")
    status = run([str(BIN / "dvc"), "status", *targets], fleet, pipeline_env()).stdout
    assert "up to date" in status.lower(), status

    # cells that cannot share a fleet are refused in one line, before any training
    for stages, why in ((["baseline@x_plus_y", "multivariate@multi_add-3"], "differ"),
                        (["baseline@x_plus_y", "linear_teacher@linear_regression-0.5"],
                         "linear_teacher@linear_regression-0.5 must run alone")):
        refused = run([sys.executable, "-m", "groklab.stages.fleet", *stages], fleet,
                      pipeline_env(**off), check=False)
        assert refused.returncode == 1 and refused.stdout == ""
        assert re.fullmatch(rf"groklab: error: stages .* cannot train as one fleet: .*{why}"
                            r".*\n", refused.stderr), refused.stderr

    params = yaml.safe_load((fleet / "params.yaml").read_text())
    params["optimizers"]["blows_up"] = {**params["optimizers"]["sgd_nesterov"], "lr": 1e30}
    params["optimizers"]["adamw_lr3"] = {**params["optimizers"]["adamw"], "lr": 0.003}
    params["studies"]["optimizer"]["values"] += ["blows_up", "adamw_lr3"]
    (fleet / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = repro_pool(fleet, "--jobs", "2", "--fleets", "optimizer", check=False, **off)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # the fleet's cells in DVC's plan order, which DVC chooses
    line = re.search(r"groklab: error: (\S+ \+ \S+) failed: groklab: error: "
                     r"optimizer@x_div_y-blows_up: loss became NaN/inf", failed.stderr)
    assert line, failed.stderr
    assert set(line[1].split(" + ")) == {"optimizer@x_div_y-blows_up",
                                         "optimizer@x_div_y-adamw_lr3"}
    assert "optimizer@x_div_y-adamw_lr3" in lock(fleet)
    assert "optimizer@x_div_y-blows_up" not in lock(fleet)
    assert not (fleet / "models/optimizer/x_div_y-blows_up").exists()
    assert "Traceback" not in failed.stdout + failed.stderr


@pytest.mark.slow
def test_an_interrupted_resumable_cell_resumes_from_its_snapshot(tmp_path):
    """``--resumable``: a cell trains as a fleet of its own, which saves snapshots; after an
    interrupt the same work resumes from the last one, and the cell's outputs and dvc.lock
    entry are byte for byte those of an uninterrupted `dvc repro`."""
    import time

    stage = "accelerators@x_mul_y-grokfast_ema"
    params = {**TINY, "seeds": [0, 1]}
    params["studies"] = {**TINY["studies"], "accelerators": {
        "values": ["grokfast_ema"],
        "settings": {"data": {"p": 11}, "train": {"steps": 2000, "eval_every": 10}}}}
    off = {"GROKLAB_TRACKING": "off", "GROKLAB_THREADS": "1"}
    straight = copy_project(tmp_path / "straight" / "groklab", params)
    resumed = copy_project(tmp_path / "resumed" / "groklab", params)
    run([str(BIN / "dvc"), "repro", stage], straight, pipeline_env(**off))

    snapshots = resumed / ".groklab" / "snapshots"
    proc = subprocess.Popen([sys.executable, "-m", "groklab.repro", "--resumable",
                             "--snapshot-every", "0", stage], cwd=resumed,
                            env=pipeline_env(**off), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(snapshots.glob("*.pt")):  # the cell's first evaluations are saved
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert f"{stage} interrupted (no results written; its last snapshot" in out, out
    assert stage not in lock(resumed) and not (resumed / "models/accelerators").exists()
    [snapshot] = snapshots.glob("*.pt")

    # the command the pool runs for it, again: it resumes
    again = run([sys.executable, "-m", "groklab.stages.fleet", stage], resumed,
                pipeline_env(**off)).stdout
    at = int(re.search(r"\(resumed from the snapshot at update (\d+)\)", again)[1])
    assert 0 < at < 2000 and at % 10 == 0, again
    assert not snapshot.exists()  # the results are written: the snapshot is gone
    assert lock(resumed)[stage] == lock(straight)[stage]
    assert files_under(resumed / "models") == files_under(straight / "models")
    status = run([str(BIN / "dvc"), "status", stage], resumed, pipeline_env()).stdout
    assert "up to date" in status.lower(), status
