"""Fault injection: `groklab run` and stage entry points as real processes, fed bad input,
interrupted, killed, denied their output directory or their CPU slots, rerun beside another
trainer. Every failure must be one line and no traceback, leave every file as it was, and
cost no training: a check that ran after training would outlast the test's timeout, as
runs with bad input are given a budget of a million updates.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# `groklab run` with the project's params.yaml (the tests run it from a temporary folder).
RUN = [sys.executable, "-m", "groklab.cli", "run", "--params",
       str(Path(__file__).resolve().parents[1] / "params.yaml")]
TINY = ["--task", "x_plus_y", "--p", "11", "--steps", "30", "--batch-size", "32",
        "--eval-every", "10"]
FOREVER = ["--task", "x_plus_y", "--p", "11", "--steps", "1000000", "--batch-size", "32",
           "--eval-every", "10"]
# x_plus_y runs also record the Fourier progress measures (measures.csv)
FILES = {".groklab", "config.json", "final.csv", "history.csv", "measures.csv", "seed0.pt",
         "summary.json"}
INTERRUPTED = re.compile(r"groklab: interrupted at update (\d+); nothing written; "
                         r"rerun to resume")


def groklab_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """One thread and a slot directory of the test's own: no other trainer on the machine
    can make it wait or change what it does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROKLAB_")}
    env.update(GROKLAB_THREADS="1", GROKLAB_CPU_SLOTS=str(tmp_path / "slots"))
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}  # "" unsets


def groklab(tmp_path: Path, *args: str, timeout: float = 120, umask: int | None = None,
            **env: str) -> subprocess.CompletedProcess:
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([*RUN, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout,
                          env=groklab_env(tmp_path, **env), preexec_fn=preexec)


def one_line(stderr: str) -> str:
    """The only line a failure prints (progress-bar refreshes aside)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(("groklab:", "WARNING"))]
    assert len(lines) == 1, stderr
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` (the slot directory aside) with its mode and contents."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == "slots" or rel.startswith("slots/"):
            continue
        st = path.lstat()
        out[rel] = (st.st_mode, path.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return out


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


class Trainer:
    """A `groklab run` in the background whose progress bar is read as it trains."""

    def __init__(self, tmp_path: Path, *args: str, **env: str):
        self.proc = subprocess.Popen([*RUN, *args],
                                     cwd=tmp_path, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=groklab_env(tmp_path, **env))
        self.stderr = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := self.proc.stderr.read(1):
            self.stderr += chunk

    def updates(self) -> int:
        """The last update the progress bar showed."""
        done = re.findall(r"\| (\d+)/\d+ \[", self.stderr)
        return int(done[-1]) if done else 0

    def wait_for_update(self, at_least: int = 10, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while self.updates() < at_least:
            assert self.proc.poll() is None, self.stderr
            assert time.monotonic() < deadline, f"no update {at_least} in {timeout} s"
            time.sleep(0.2)
        return self.updates()

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # never leave a trainer running after the test
            raise
        self.reader.join(timeout=10)
        return rc


@pytest.fixture
def user_files(tmp_path: Path) -> Path:
    """A user's files and directories around the places `--out` will name."""
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("a,b\n1,2\n")
    result = tmp_path / "result"  # a groklab result to which the user added a file
    result.mkdir()
    (result / ".groklab").write_text("# written by groklab\nconfig.json\n")
    (result / "config.json").write_text("{}\n")
    (result / "todo.txt").write_text("compare with run 2\n")
    (tmp_path / "link").symlink_to("mine")
    return tmp_path


@pytest.mark.parametrize("args, words", [
    (["--seed", "-1"], ["seed=-1", "from 0 to"]),
    (["--task", "x_div_y", "--p", "2"], ["p=2", "1 training and 1 validation", "at least 8",
                                         "p >= 5"]),
    (["--out", "notes.txt"], ["notes.txt is a file", "never overwrites"]),
    (["--out", "notes.txt/run"], ["notes.txt is a file, not a directory"]),
    (["--out", "mine"], ["mine is a directory groklab did not write"]),
    (["--out", "result"], ["result holds files groklab did not write (todo.txt)"]),
    (["--out", "link"], ["link is a symbolic link"]),
    # Bounds: each a refusal, not an allocation or an overflow after training a while.
    (["--p", "20011"], ["p=20011 is more than 8,192"]),
    (["--steps", "1000000000000"], ["steps=1000000000000 is more than 100,000,000"]),
    (["--batch-size", "1000000000"], ["batch_size=1000000000 is more than 16,777,216"]),
    (["--task", "multi_add", "--p", "7", "--operands", "50"], ["7^50 equations"]),
    (["--task", "parity", "--concealed-bits", "100000"], ["at most 62 bits"]),
    # Unreadable --params, argparse's own errors: one line too, never the usage block.
    (["--params", "mine"], ["mine is a directory, not a params file"]),
    (["--params", sys.executable], ["is not a text file", "not UTF-8"]),
    (["--p", "x"], ["argument --p: invalid int value: 'x'", "groklab run --help"]),
    (["--batch-size", "0"], ["argument --batch-size: 0 must be positive"]),
    (["--task", "nope"], ["argument --task: invalid choice: 'nope'"]),
])
def test_bad_input_is_one_line_before_training_and_touches_nothing(user_files, args, words):
    before = snapshot(user_files)
    proc = groklab(user_files, *FOREVER, "--quiet", *args, timeout=60)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("groklab: error: ")
    for word in words:
        assert word in line
    assert proc.stdout == ""
    assert snapshot(user_files) == before  # same names, modes and bytes: nothing moved


def test_a_run_larger_than_memory_is_refused_before_training(tmp_path):
    """The estimate (groklab.budget) against GROKLAB_MEMORY: batch 100,000 of the papers'
    Transformer needs about 16 GiB of activations; with 1 GiB available it is one line
    naming the key, and a run that fits the same 1 GiB trains."""
    proc = groklab(tmp_path, *FOREVER, "--quiet", "--p", "97", "--batch-size", "100000",
                   timeout=60, GROKLAB_MEMORY="1G")
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("groklab: error: this run would need about ")
    assert "GiB available; lower train.batch_size, or set GROKLAB_MEMORY" in line
    assert groklab(tmp_path, *TINY, "--quiet", GROKLAB_MEMORY="1G").returncode == 0
    bad = groklab(tmp_path, *TINY, "--quiet", GROKLAB_MEMORY="lots")
    assert bad.returncode == 2 and "GROKLAB_MEMORY='lots' is not a size" in one_line(bad.stderr)


@pytest.fixture
def unwritable(tmp_path: Path):
    """A directory this process cannot create anything in: without write permission, or,
    as root (who ignores permissions), immutable."""
    path = tmp_path / "shared"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root on a file system without chattr +i")
    yield path
    subprocess.run(["chattr", "-i", str(path)], check=True)


def test_unwritable_out_fails_before_training(tmp_path, unwritable):
    before = snapshot(tmp_path)
    proc = groklab(tmp_path, *FOREVER, "--quiet", "--out", "shared/run", timeout=60)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("groklab: error: cannot write shared/run: cannot create a "
                           "directory in shared: ")
    assert snapshot(tmp_path) == before


def test_ctrl_c_is_one_line_exit_130_and_writes_nothing(tmp_path):
    before = snapshot(tmp_path)
    trainer = Trainer(tmp_path, *FOREVER, "--out", "run")
    seen = trainer.wait_for_update()
    assert trainer.stop(signal.SIGINT) == 130
    match = INTERRUPTED.fullmatch(one_line(trainer.stderr))
    assert match and seen <= int(match[1]) < 1_000_000
    assert snapshot(tmp_path) == before


def test_sigkill_keeps_the_last_result_and_a_rerun_completes_it(tmp_path):
    assert groklab(tmp_path, *TINY, "--quiet", "--out", "run").returncode == 0
    finished = files_of(tmp_path / "run")
    assert set(finished) == FILES

    trainer = Trainer(tmp_path, *FOREVER, "--seed", "1", "--out", "run")
    trainer.wait_for_update()
    assert trainer.stop(signal.SIGKILL) == -signal.SIGKILL
    assert files_of(tmp_path / "run") == finished
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "slots"]

    # What a writer killed between making its temporary directory and renaming it leaves.
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = tmp_path / f".run.groklab-{dead.pid}-x1y2z3"
    leftover.mkdir()
    (leftover / "history.csv").write_text("seed,step\n0,")
    assert groklab(tmp_path, *TINY, "--quiet", "--out", "run").returncode == 0
    assert files_of(tmp_path / "run") == finished  # complete, and the same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "slots"]


def test_results_get_the_permissions_of_the_umask(tmp_path):
    """umask 027: group-readable, as any file the user makes; neither mkdtemp's 0700 nor a
    fixed 0755."""
    assert groklab(tmp_path, *TINY, "--quiet", "--out", "run", umask=0o027).returncode == 0
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o750
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()} \
        == dict.fromkeys(FILES, 0o640)


def test_a_user_whose_slot_directory_is_taken_still_trains(tmp_path):
    """Another user's directory where this user's slots would go (the machine-wide slot
    directory of old): one warning, then training as usual."""
    taken = tmp_path / "taken"
    taken.mkdir(mode=0o700)
    if os.geteuid() == 0:  # root may write anywhere: make it truly another user's
        os.chown(taken, 65534, 65534)
    else:
        taken.chmod(0o500)
    proc = groklab(tmp_path, *TINY, "--quiet", "--out", "run", GROKLAB_CPU_SLOTS=str(taken))
    assert proc.returncode == 0, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("WARNING groklab.cpu: CPU sharing with other groklab trainers is "
                           "off") and str(taken) in line
    assert set(files_of(tmp_path / "run")) == FILES
    assert list(taken.iterdir()) == []


def test_reruns_are_byte_identical_also_beside_another_trainer(tmp_path):
    """Same configuration and seed, two processes: alone, then while another user's trainer
    (slots of its own, so nothing coordinates the two) trains. The thread count is never
    chosen from the load (tests/test_cpu.py), so both runs use the same."""
    args = [*TINY, "--quiet", "--seed", "3"]
    assert groklab(tmp_path, *args, "--out", "alone").returncode == 0
    other = Trainer(tmp_path, *FOREVER, GROKLAB_CPU_SLOTS=str(tmp_path / "other-slots"))
    try:
        other.wait_for_update()
        proc = groklab(tmp_path, *args, "--out", "beside")
        assert proc.returncode == 0, proc.stderr
        assert other.proc.poll() is None  # it really trained beside
    finally:
        assert other.stop(signal.SIGINT) == 130
    alone, beside = files_of(tmp_path / "alone"), files_of(tmp_path / "beside")
    assert set(alone) == FILES - {"seed0.pt"} | {"seed3.pt"}
    assert alone == beside


def test_out_that_cannot_be_renamed_is_refused_before_training(tmp_path, unwritable):
    """An empty directory groklab could replace, but that the file system will not let it
    rename (immutable here; a mount point alike): refused before training, and no
    temporary folder of groklab's left beside it."""
    out = unwritable  # empty, and immutable (or, not root, unwritable)
    before = snapshot(tmp_path)
    proc = groklab(tmp_path, *FOREVER, "--quiet", "--out", out.name, timeout=60)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith(f"groklab: error: {out.name} is immutable") or \
        line.startswith(f"groklab: error: cannot write {out.name}")
    assert snapshot(tmp_path) == before


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """A file-size limit (ulimit -f 4 KiB) stands in for a full disk: the first file past
    it fails to write. One line naming the path, exit 2, no result and no temporary folder:
    nothing half-written."""
    def limited() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([*RUN, *TINY, "--quiet", "--out", "run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env=groklab_env(tmp_path), preexec_fn=limited)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("groklab: error: cannot write run: File too large after ")
    assert "nothing was written" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slots"]


def test_ctrl_c_while_importing_is_one_line_exit_130(tmp_path):
    """SIGINT half a second after start, while torch is still importing."""
    proc = subprocess.Popen([*RUN, *FOREVER, "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=groklab_env(tmp_path))
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a no-op once it has ended; never leave a trainer running
    assert proc.returncode == 130, stderr
    assert one_line(stderr).startswith("groklab: interrupted")


def test_last_line_is_strict_json(tmp_path):
    """NaN (an erf fit that did not converge in 30 updates) is null: a strict parser reads it."""
    proc = groklab(tmp_path, *TINY, "--quiet")
    assert proc.returncode == 0, proc.stderr

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in the JSON line")

    summary = json.loads(proc.stdout.splitlines()[-1], parse_constant=refuse)
    assert None in summary.values()  # the fields that were NaN before


STAGE_MAIN = """
import os, signal, sys, time
from groklab.stages.common import fail_cleanly

def interrupted():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)

def denied():
    open("{path}", "w")

def unexpected():
    raise OSError(104, "Connection reset by peer")

def full():
    raise OSError(28, "No space left on device")

fail_cleanly({{"interrupted": interrupted, "denied": denied, "unexpected": unexpected,
              "full": full}}[
    sys.argv[1]])
"""


@pytest.mark.parametrize("case, rc, expected", [
    ("interrupted", 130, "groklab: interrupted; nothing written; rerun to resume"),
    ("denied", 1, "groklab: error: {path}: "),
    ("unexpected", 1, None),
    ("full", 1, "groklab: error: No space left on device; free space and rerun"),
])
def test_stage_entry_points_fail_cleanly(tmp_path, unwritable, case, rc, expected):
    path = unwritable / "out.csv"
    code = STAGE_MAIN.format(path=path)
    proc = subprocess.run([sys.executable, "-c", code, case], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == rc
    if expected is None:  # not about a path: a bug or the machine, so keep the traceback
        assert "Traceback" in proc.stderr and "Connection reset" in proc.stderr
    else:
        assert one_line(proc.stderr).startswith(expected.format(path=path))


def test_dvc_writes_no_usage_report(tmp_path, unused_port):
    """The project's .dvc/config turns DVC analytics off. The control (the same command
    without that setting) shows where a report would land: a JSON file in the temp dir.
    DVC_DAEMON keeps DVC from starting the process that would send it."""
    root = Path(__file__).resolve().parents[1]
    repo, tmp, config_dirs = tmp_path / "repo", tmp_path / "tmp", tmp_path / "config"
    for path in (repo, tmp, config_dirs):
        path.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env.update(TMPDIR=str(tmp), DVC_DAEMON="1", DVC_GLOBAL_CONFIG_DIR=str(config_dirs),
               DVC_SYSTEM_CONFIG_DIR=str(config_dirs),
               DVC_ANALYTICS_ENDPOINT=f"http://127.0.0.1:{unused_port}")
    dvc = str(Path(sys.executable).parent / "dvc")

    def run(*cmd: str, **extra: str) -> None:
        subprocess.run(cmd, cwd=repo, env={**env, **extra}, check=True, capture_output=True,
                       timeout=120)

    run("git", "init", "-q")
    run(dvc, "init", "-q", DVC_NO_ANALYTICS="1")  # before the project's config is in place
    shutil.copy(root / ".dvc" / "config", repo / ".dvc" / "config")
    run(dvc, "status")
    assert list(tmp.iterdir()) == []
    (repo / ".dvc" / "config").write_text("[core]\n")  # the control: analytics on
    run(dvc, "status")
    reports = list(tmp.iterdir())
    assert len(reports) == 1 and "cmd_class" in reports[0].read_text()


# --- Names are data, never shell -------------------------------------------------------

INJECTION_PARAMS = {"tasks": ["x_plus_y"], "seeds": [0], "baseline": {"tasks": ["x_plus_y"]},
                    "data": {"p": 23}, "model": {"width": 32, "heads": 2},
                    "train": {"steps": 20, "batch_size": 16}}


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    """This project in a fresh git repo, tiny params and one cell per study (few stages for
    `--keep-going` to run); each test works on a clone of it."""
    import yaml
    from project_copy import ROOT, copy_project

    studies = yaml.safe_load((ROOT / "params.yaml").read_text())["studies"]
    one_cell = {name: {"tasks": spec["tasks"][:1], "values": spec["values"][:1],
                       "value_settings": {}} for name, spec in studies.items()}
    return copy_project(tmp_path_factory.mktemp("names") / "groklab",
                        {**INJECTION_PARAMS, "studies": one_cell})


def dvc_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               GROKLAB_TRACKING="off", GROKLAB_THREADS="1")
    return env


@pytest.mark.parametrize("edit, overrides", [
    # An augmentation whose name is a command, in the registry and the study's values.
    ({"augmentations": {"my aug; touch PWNED": {"reverse": 0.0, "negate": 0.1}},
      "studies": {"augmentation": {"tasks": ["x_plus_y"], "values": ["my aug; touch PWNED"]}}},
     []),
    # A command substitution as a base task: the generate stage's name.
    ({"baseline": {"tasks": ["x_plus_y", "$(touch PWNED)"]}}, []),
    # A pasted `-S`, in an experiment.
    ({}, ["-S", 'tasks=["x_plus_y;touch PWNED"]']),
])
def test_no_name_runs_a_shell_command_in_dvc(dvc_project, tmp_path, edit, overrides):
    """Real `dvc repro` / `dvc exp run -S`: the stage commands hold no name (a stage reads
    DVC_STAGE), and the params check refuses the name in one line before any training.
    `--keep-going` runs every stage, the hostile ones too, whatever fails first; each
    prints the same one line."""
    import yaml
    from project_copy import merge

    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(dvc_project), str(repo)], check=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(params, edit), sort_keys=False))
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam",
                    "hostile names", "--allow-empty"], cwd=repo, check=True)
    dvc = str(Path(sys.executable).parent / "dvc")
    cmd = [dvc, "exp", "run", "-k", *overrides] if overrides else [dvc, "repro", "-k"]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300,
                          env=dvc_env())
    assert proc.returncode != 0
    assert not list(repo.rglob("PWNED")) and not list(tmp_path.rglob("PWNED"))
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    lines = {line for line in out.splitlines() if line.startswith("groklab:")}
    assert len(lines) == 1, out
    line = lines.pop()
    assert line.startswith("groklab: error: params.yaml: ") and "not a safe name" in line
    trained = [p for p in (repo / "models").rglob("*") if p.is_file()]
    assert trained == []  # refused before any training (DVC may make empty folders)


def test_out_inside_a_dvc_output_is_refused(dvc_project, tmp_path):
    """`groklab run --out models/baseline/x_plus_y` would replace what `dvc repro` made."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(dvc_project), str(repo)], check=True)
    for out in ("models/baseline/x_plus_y", "data/x_plus_y/mine"):
        proc = subprocess.run([*RUN, *FOREVER, "--quiet", "--out", out], cwd=repo,
                              capture_output=True, text=True, timeout=120,
                              env=groklab_env(tmp_path))
        assert proc.returncode == 2
        line = one_line(proc.stderr)
        assert f"{repo / out} is" in line and "the output of DVC stage" in line
    assert not (repo / "models").exists() and not (repo / "data").exists()


# --- Telemetry: a stage looks nothing up on the network ---------------------------------

CI_VARIABLES = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL")


def traced_stage(repo: Path, **extra: str) -> str:
    """strace's record of the network calls of a training stage that logs to MLflow (the
    project's SQLite store), as a user runs it: none of the variables by which MLflow
    guesses it runs in CI or a test, where it would send nothing anyway."""
    env = {k: v for k, v in dvc_env().items()
           if k not in CI_VARIABLES and k != "GROKLAB_TRACKING" and not k.startswith("MLFLOW_")}
    env.update(GROKLAB_CPU_SLOTS=str(repo / ".slots"), **extra)
    trace = repo / "network.trace"
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=network", "-o", str(trace),
                           sys.executable, "-m", "groklab.stages.train", "baseline", "x_plus_y"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (repo / "mlflow.db").exists()  # it did log, to the local store
    return trace.read_text()


def lookups(trace: str) -> list[str]:
    """connect() calls to a name service or an internet address: a lookup or a request."""
    return [line for line in trace.splitlines() if "connect(" in line and (
        "AF_INET" in line or "nscd" in line)]


def test_a_stage_makes_no_network_lookup(dvc_project, tmp_path):
    """The control, MLflow's default (MLFLOW_DISABLE_TELEMETRY=false), resolves its
    telemetry host; groklab's default resolves nothing and connects nowhere."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(dvc_project), str(repo)], check=True)
    assert lookups(traced_stage(repo)) == []
    shutil.rmtree(repo / "models")
    assert lookups(traced_stage(repo, MLFLOW_DISABLE_TELEMETRY="false")) != []
