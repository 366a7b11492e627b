"""`dvc repro` with the training cells side by side: ``python -m groklab.repro --jobs N``.

DVC runs one stage at a time, but it supports running independent stages from several
``dvc repro`` processes in one workspace ("parallel stage execution" in `dvc repro`'s
documentation): each process holds the repository lock only while it checks and records
its stage, not while the stage's command runs, and ``dvc --wait-for-lock`` waits for that
lock instead of failing. So this module writes no scheduler and no record of its own:

1. ``dvc repro --dry`` names the stages a plain ``dvc repro`` would run, in its order;
2. the stages before the last training cell that are not cells (``generate@<task>``, ...)
   run first, in one ``dvc repro``;
3. the training cells (``<family>@<name>`` stages other than ``generate@``) run in a pool
   of N ``dvc --wait-for-lock repro -s <cell>`` processes, each cell's entry in dvc.lock
   written by DVC as it finishes;
4. a final ``dvc repro`` runs what is left (``evaluate``, ``report``).

dvc.lock, the outputs and `dvc status` are then what a sequential `dvc repro` leaves, at
the same thread count: a cell's bytes depend on its thread count (see groklab.cpu), so
each cell gets ``GROKLAB_THREADS`` = cores // N unless the caller set it.

``--fleets`` (for a GPU) trains the cells that share a model and batch shape as one batched
model each (:mod:`groklab.fleet`; ``--fleet-members`` caps its size): the pool's units are
then ``python -m groklab.stages.fleet <cells>`` processes, which write each cell as its
stage would and record them with ``dvc commit``; the cells that must train alone still run
as ``dvc repro -s``. ``--resumable`` runs each cell that could join a fleet as a fleet of
its own: the same bytes, and its process saves a snapshot every ten minutes, so an
interrupted cell resumes where it stopped instead of starting again (for cells of many
hours on a CPU, such as the accelerators' 300,000 updates). Fleets are resumable too.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from groklab.errors import OneLineParser

DVC = [sys.executable, "-m", "dvc"]
PLANNED = re.compile(r"^Running stage '([^']+)':", re.MULTILINE)
FAILED = re.compile(r"ERROR: failed to reproduce '([^']+)'")
NOT_CELLS = ("generate@",)  # matrix stages that prepare data rather than train


def is_cell(stage: str) -> bool:
    """A training cell: ``<family>@<name>``, except the data stages."""
    return "@" in stage and not stage.startswith(NOT_CELLS)


def split_plan(plan: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """The planned stages as (before the cells, the cells, after them): the non-cell stages
    planned before the last cell run first, the others after every cell."""
    cells = [s for s in plan if is_cell(s)]
    if not cells:
        return [], [], list(plan)
    last = max(i for i, s in enumerate(plan) if is_cell(s))
    before = [s for s in plan[:last] if not is_cell(s)]
    after = [s for s in plan[last:] if not is_cell(s)]
    return before, cells, after


def threads_per_cell(jobs: int, cores: int | None = None) -> int:
    """The cores shared out among ``jobs`` cells at once, at least one thread each."""
    return max(1, (cores or os.cpu_count() or 1) // jobs)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class Progress:
    """Cells done, failed, running and pending, with the time elapsed and an estimate of the
    time left (the mean time of a finished cell × the cells left ÷ the jobs). With fleets
    the units are runs: a fleet or a cell each."""

    total: int
    jobs: int
    noun: str = "cells"
    start: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    running: int = 0
    busy_s: float = 0.0  # the finished cells' own run times, summed

    def finished(self, seconds: float, ok: bool) -> None:
        self.running -= 1
        self.busy_s += seconds
        if ok:
            self.done += 1
        else:
            self.failed += 1

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.start
        finished = self.done + self.failed
        pending = self.total - finished - self.running
        text = (f"{self.noun}: {self.done} done, {self.failed} failed, {self.running} running, "
                f"{pending} pending of {self.total}; elapsed {format_seconds(elapsed)}")
        if finished:
            left = self.busy_s / finished * (pending + self.running / 2) / self.jobs
            text += f", about {format_seconds(left)} left"
        return text


def failure_line(output: str) -> str:
    """A failed stage's own one-line message (``groklab: ...``), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("groklab:")]
    return (own or lines or ["(no output)"])[-1]


def dvc(args: Sequence[str], env: dict[str, str] | None = None,
        capture: bool = False) -> subprocess.CompletedProcess:
    """One dvc command, as an argument list (no shell sees a stage name)."""
    return subprocess.run([*DVC, *args], env=env, text=True,
                          capture_output=capture, check=False)


def plan(flags: Sequence[str], targets: Sequence[str]) -> list[str]:
    """The stages ``dvc repro`` would run, in its order (from ``dvc repro --dry``).

    A dry run cannot look at a stage whose dependency is an output that no earlier stage
    has written yet (``report`` reads ``reports/tables``, which ``evaluate`` writes): DVC
    stops there. Such a stage is not a cell and comes after every cell, and the final
    ``dvc repro`` runs it, so the plan up to it is kept; a dry run that fails at a cell
    fails here with DVC's message, as the real run would."""
    proc = dvc(["repro", "--dry", *flags, *targets], capture=True)
    stages = PLANNED.findall(proc.stdout)
    if proc.returncode:
        failed = FAILED.search(proc.stdout + proc.stderr)
        if failed is None or is_cell(failed.group(1)):
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(proc.returncode)
    return [s for s in stages if not (proc.returncode and s == failed.group(1))]


def fleet_units(cells: Sequence[str], max_members: int | None) -> list[str | list[str]]:
    """The cells grouped into fleets (:func:`groklab.fleet.group_fleets`), in plan order: a
    fleet is a list of stages (perhaps of one), a cell that must train alone its name."""
    from groklab.fleet import group_fleets, stage_fleet_key
    from groklab.params import load_params

    params = load_params()
    keys = [stage_fleet_key(params, stage) for stage in cells]
    members = [len(params["seeds"])] * len(cells)
    return [[cells[i] for i in group] if keys[group[0]] is not None else cells[group[0]]
            for group in group_fleets(keys, max_members, members)]


def unit_command(unit: str | Sequence[str], flags: Sequence[str],
                 fleet_flags: Sequence[str] = ()) -> list[str]:
    """A cell's name: ``dvc repro -s <flags>``; a list: one fleet process (resumable from its
    snapshot) with ``fleet_flags``, which records its cells itself."""
    if isinstance(unit, str):
        return [*DVC, "--wait-for-lock", "repro", "-s", *flags, unit]
    return [sys.executable, "-m", "groklab.stages.fleet", *fleet_flags, *unit]


def run_cell(stage: str | Sequence[str], flags: Sequence[str], env: dict[str, str],
             running: set[subprocess.Popen], lock: threading.Lock,
             fleet_flags: Sequence[str] = ()) -> tuple[bool, str]:
    """``dvc repro -s <stage>`` (or a fleet's process, for a list) in its own process group
    (listed in ``running`` while it runs, so an interrupt can reach it); (succeeded, its
    output)."""
    unit = stage if isinstance(stage, str) else list(stage)
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: no buffer to fill
        with lock:
            proc = subprocess.Popen(unit_command(unit, flags, fleet_flags), env=env, stdout=log,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True)
            running.add(proc)
        try:
            proc.wait()
        finally:
            with lock:
                running.discard(proc)
        log.seek(0)
        return proc.returncode == 0, log.read()


def run_cells(cells: Sequence[str | Sequence[str]], jobs: int, flags: Sequence[str],
              env: dict[str, str], keep_going: bool = False,
              fleet_flags: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Every cell, ``jobs`` at a time; the failures as (stage, one line). After a failure
    no new cell starts (with ``keep_going``, the others still do); those running finish
    and are recorded. Ctrl-C (or SIGINT from a time limit, or SIGTERM) starts no new cell
    and passes the interrupt to the running ones, which stop cleanly (a stage interrupted
    writes nothing); then KeyboardInterrupt is raised. A unit that is a list of stages is a
    fleet (:func:`unit_command`)."""
    fleets = any(not isinstance(c, str) for c in cells)
    progress = Progress(len(cells), jobs, "runs" if fleets else "cells")
    failures: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    running: set[subprocess.Popen] = set()

    def one(unit: str | Sequence[str]) -> None:
        stage = unit if isinstance(unit, str) else " + ".join(unit)
        with lock:
            if stop.is_set():
                return
            progress.running += 1
        t0 = time.monotonic()
        ok, output = run_cell(unit, flags, env, running, lock, fleet_flags)
        with lock:
            if not ok and interrupted.is_set():  # stopped by the interrupt: not a failure
                progress.running -= 1
                status = "interrupted (nothing written)" if isinstance(unit, str) else (
                    "interrupted (no results written; its last snapshot, if any, resumes it)")
            else:
                progress.finished(time.monotonic() - t0, ok)
                status = "done" if ok else f"FAILED: {failure_line(output)}"
            if not ok and not interrupted.is_set():
                if not keep_going:
                    stop.set()
                failures.append((stage, failure_line(output)))
            print(f"{stage} {status} ({format_seconds(time.monotonic() - t0)}) | "
                  f"{progress.line()}", flush=True)

    interrupted = threading.Event()
    what = f"{len(cells)} runs ({sum(1 if isinstance(c, str) else len(c) for c in cells)} " \
        "cells)" if fleets else f"{len(cells)} cells"
    print(f"{what}, {jobs} at a time, {env['GROKLAB_THREADS']} thread(s) each", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, stage) for stage in cells]
        try:
            for future in as_completed(futures):
                future.result()
        except KeyboardInterrupt:
            with lock:
                interrupted.set()
                stop.set()
                for proc in running:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGINT)
            pool.shutdown(wait=True)
            raise
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m groklab.repro",
        description="dvc repro, with the training cells JOBS at a time.")
    parser.add_argument("--jobs", "-j", type=int, default=1,
                        help="cells at once (default 1); each gets cores/JOBS threads "
                             "unless GROKLAB_THREADS is set")
    parser.add_argument("--allow-missing", action="store_true",
                        help="passed to dvc repro: skip stages whose only change is "
                             "missing data (a clone without the DVC cache)")
    parser.add_argument("--keep-going", "-k", action="store_true",
                        help="after a cell fails, go on with the others (as dvc repro -k); "
                             "evaluate and report then wait for a rerun")
    parser.add_argument("--fleets", action="store_true",
                        help="train the cells that share a model and batch shape as one "
                             "batched model each (groklab.fleet; for a GPU)")
    parser.add_argument("--fleet-members", type=int, default=None, metavar="N",
                        help="with --fleets: at most N members (cells x seeds) per fleet")
    parser.add_argument("--resumable", action="store_true",
                        help="train each cell that can as a fleet of its own, which saves "
                             "a snapshot every 10 minutes: an interrupted cell resumes "
                             "(groklab.stages.fleet)")
    parser.add_argument("--snapshot-every", type=float, default=None, metavar="SECONDS",
                        help="with --fleets or --resumable: seconds between snapshots "
                             "(default 600)")
    parser.add_argument("targets", nargs="*", help="stages to reproduce (default: all)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: must be 1 or more")
    if args.fleet_members is not None and args.fleet_members < 1:
        parser.error(f"--fleet-members {args.fleet_members}: must be 1 or more")
    if args.snapshot_every is not None and args.snapshot_every < 0:
        parser.error(f"--snapshot-every {args.snapshot_every:g}: must be 0 or more seconds")
    flags = ["--allow-missing"] if args.allow_missing else []
    fleet_flags = ([] if args.snapshot_every is None else
                   ["--snapshot-every", f"{args.snapshot_every:g}"])

    before, cells, _ = split_plan(plan(flags, args.targets))
    env = dict(os.environ)
    env.setdefault("GROKLAB_THREADS", str(threads_per_cell(args.jobs)))
    start = time.monotonic()
    if before and dvc(["repro", *flags, *before], env=env).returncode:
        return 1
    units: list[str | list[str]] = list(cells)
    if args.fleets:
        units = fleet_units(cells, args.fleet_members)
    elif args.resumable:  # a fleet of one member cap: every cell its own
        units = fleet_units(cells, 1)
    failures = run_cells(units, args.jobs, flags, env, args.keep_going,
                         fleet_flags) if cells else []
    if failures:
        for stage, line in failures:
            print(f"groklab: error: {stage} failed: {line}", file=sys.stderr)
        print("groklab: the cells that finished are recorded in dvc.lock; "
              "rerun to go on", file=sys.stderr)
        return 1
    rest = dvc(["repro", *flags, *args.targets], env=env).returncode
    print(f"groklab.repro: finished in {format_seconds(time.monotonic() - start)}",
          flush=True)
    return rest


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill PID` (a script's or a scheduler's stop) stops as Ctrl-C does


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("groklab: interrupted; finished cells are recorded; rerun to go on",
              file=sys.stderr)
        sys.exit(130)
