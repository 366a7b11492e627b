"""Training speed: ms per update for 1 to 30 batched seeds, a cell, stage start-up, the pipeline.

Base configuration: x_plus_y, p=97, fraction 0.5, 2-layer width-128 Transformer, AdamW,
batch 512, whole-validation evaluation every 10 updates (amortised in every figure).
Prints a table and, as its last line, a JSON object:

* ``ms_per_update``: {seeds: ms} for 1, 3, 10 and 30 batched seeds (``--seeds``), each the
  median of ``--repeats`` ``train`` calls, timed from the first to the last evaluation
  (set-up and CUDA graph capture are the cell's fixed cost, reported apart);
* ``cell_s``: one base cell, 7,500 updates x 3 seeds with evaluation and set-up (timed on
  a GPU or with ``--full-cell``; else estimated, ``cell_s_measured`` false);
* ``startup_s``: median of ``--startup-runs`` training-stage start-ups, from process start to
  the first update done (see :func:`stage_invocation`); ``startup_other_s``: the same median
  for each other kind of stage (:data:`OTHER_STAGES`);
* ``pipeline_estimate_s``: every training cell of ``--params`` (its own steps, batch size,
  model, task and seeds), each distinct shape timed for ``--pipeline-steps`` updates, plus
  each stage's start-up by its kind (``pipeline_stage_kinds``; the compute of evaluate and
  report is not included); ``estimates``: the same for each ``--also-estimate`` params
  file (the first look's, say), from the same start-ups and shape timings;
* the matmul peak and fraction of it reached, and the reference-style loop the papers'
  code used (per-example Python sampling, ``nn.MultiheadAttention``, logits for every
  position, evaluation on 8 x 512 sampled validation examples every 10 updates).

Run: ``.venv/bin/python benchmarks/train_speed.py [--device cuda]`` (``--help``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch.utils.flop_counter import FlopCounterMode

from groklab.cells import cell_config, experiment_cells, experiment_source, trained_cells
from groklab.config import (
    MATMUL_PRECISIONS,
    AugmentConfig,
    CurriculumConfig,
    LinearTeacherConfig,
    RunConfig,
)
from groklab.models.reference import ReferenceTransformer
from groklab.params import KNOBS, get_key, load_params
from groklab.tasks import build_task, split
from groklab.train import (
    Progress,
    evaluate,
    float32_matmuls,
    resolve_device,
    resolve_engine,
    train,
)

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 20) -> float:
    """Measured float32 matmul throughput (GFLOP/s) of an n x n x n product."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_train(cfg: RunConfig, seeds: list[int], steps: int, engine: str = "auto"
               ) -> tuple[float, float, float]:
    """One ``train`` call of ``steps`` updates: (ms per update, fixed s, total s).

    ms per update is the time between the first and the last evaluation's progress call
    over the updates between them (evaluation amortised); each call follows a read of the
    history, so the device has finished the work it reports. The fixed seconds are the
    rest of the call: set-up, CUDA graph capture, the final evaluation.
    """
    stamps: list[tuple[int, float]] = []

    def stamp(p: Progress) -> None:
        stamps.append((p.step, time.perf_counter()))

    device = resolve_device(cfg.train.device)
    _sync(device)
    t0 = time.perf_counter()
    train(cfg.replace(train={"steps": steps}), seeds, progress=stamp, engine=engine)
    _sync(device)
    total = time.perf_counter() - t0
    (s0, a), (s1, b) = stamps[0], stamps[-1]
    return (b - a) / (s1 - s0) * 1e3, total - (b - a), total


def timing(cfg: RunConfig, seeds: list[int], steps: int, repeats: int = 1,
           engine: str = "auto") -> tuple[float, float]:
    """Medians over ``repeats`` of :func:`time_train`; ``steps`` rounded up to whole
    evaluation intervals."""
    every = cfg.train.eval_every
    n = max(1, -(-steps // every)) * every
    runs = [time_train(cfg, seeds, n, engine) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


class _ReferenceStream(torch.utils.data.IterableDataset):
    """The reference's data path: one equation at a time, in Python, as tensors."""

    def __init__(self, pairs: list[int], p: int):
        self.pairs, self.p = pairs, p

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = divmod(random.choice(self.pairs), self.p)
        return torch.tensor([a, self.p, b, self.p + 1]), torch.tensor((a + b) % self.p)


def time_reference_style(cfg: RunConfig, steps: int, device: torch.device) -> float:
    """ms per update of a loop written the way the reference implementation was.

    Per-example Python sampling through an IterableDataset and DataLoader, the
    ``nn.MultiheadAttention`` model computing logits at every position, and evaluation
    on 8 x 512 sampled validation examples every 10 updates.
    """
    task = build_task(cfg.data)
    sp = split(len(task), cfg.data.train_fraction, 0)
    bs = cfg.train.batch_size
    train_iter = iter(torch.utils.data.DataLoader(
        _ReferenceStream(sp.train.tolist(), cfg.data.p), batch_size=bs))
    val_iter = iter(torch.utils.data.DataLoader(
        _ReferenceStream(sp.val.tolist(), cfg.data.p), batch_size=bs))
    model = ReferenceTransformer(task.vocab_size, task.seq_len, task.n_classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.5)
    t0 = None
    for step in range(steps + 10):
        if step == 10:  # the first 10 updates warm caches
            _sync(device)
            t0 = time.perf_counter()
        x, y = (t.to(device) for t in next(train_iter))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 10 == 0:
            with torch.no_grad():
                for _ in range(8):
                    xv, yv = (t.to(device) for t in next(val_iter))
                    (model(xv).argmax(-1) == yv).float().mean().item()
    _sync(device)
    return (time.perf_counter() - t0) / steps * 1e3


def update_flops(cfg: RunConfig, device: torch.device) -> tuple[float, float]:
    """FLOPs of one update as executed: (training step, amortised validation share)."""
    from groklab.augment import get_augmentation
    from groklab.models import build_model
    from groklab.train import TrainData

    task = build_task(cfg.data)
    data = TrainData(task, cfg, [0], device, get_augmentation(cfg.train.aug, task))
    model = build_model(cfg.model, task, [0]).to(device)
    idx = data.train_idx[:, :cfg.train.batch_size]
    with FlopCounterMode(display=False) as fc:
        loss = F.cross_entropy(model(data.tokens[idx]).transpose(1, 2), data.labels[idx])
        loss.backward()
    train_flops = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        evaluate(model, data.val_tokens, data.val_labels)
    return train_flops, fc.get_total_flops() / cfg.train.eval_every


# --- stage start-up ---------------------------------------------------------------------


def stage_invocation() -> tuple[str, list[str]]:
    """The training stage as dvc.yaml runs it: ``python -m <module> <args>``.

    The one place that names the stage (adapt it when the stage scripts change).
    """
    return "groklab.stages.train", ["baseline", "x_plus_y"]


def _tiny_params(params: dict[str, Any], device: str) -> dict[str, Any]:
    """``params`` with one seed, one task and a 10-update budget."""
    out = dict(params)
    out.update({"seeds": [0], "tasks": ["x_plus_y"], "device": device,
                "baseline": {"tasks": ["x_plus_y"]}})
    out["train"] = {**params["train"], "steps": 10, "eval_every": 10}
    return out


def stage_process(argv: list[str], params: dict[str, Any]
                  ) -> tuple[subprocess.CompletedProcess, float]:
    """``python ARGV`` in a fresh temporary directory holding only ``params`` as params.yaml,
    with tracking off (``GROKLAB_TRACKING=off``), this repo's src first on the path and
    ``GROKLAB_T0`` stamped at launch: the finished process and its seconds, spawn to exit."""
    src = str(ROOT / "src")
    env = {**os.environ, "GROKLAB_TRACKING": "off",
           "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="groklab-startup-") as tmp:
        Path(tmp, "params.yaml").write_text(yaml.safe_dump(params))
        env["GROKLAB_T0"] = repr(time.time())
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, *argv], cwd=tmp, env=env, capture_output=True,
                              text=True, timeout=300)
        return proc, time.perf_counter() - start


def _failed(what: str, proc: subprocess.CompletedProcess) -> RuntimeError:
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    return RuntimeError(f"{what} (exit {proc.returncode}):\n{tail}")


def stage_startup(params: dict[str, Any], device: str, runs: int) -> list[float]:
    """Seconds from process start to the first update of ``runs`` real stage processes
    (:func:`stage_process`); ``train`` logs the first update's time after ``GROKLAB_T0`` at
    DEBUG, which a one-line wrapper turns on."""
    module, args = stage_invocation()
    wrapper = ("import logging, runpy, sys; "
               "logging.basicConfig(level=logging.WARNING, format='%(message)s'); "
               "logging.getLogger('groklab.train').setLevel(logging.DEBUG); "
               f"sys.argv = [{module!r}] + sys.argv[1:]; "
               f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    times = []
    for _ in range(runs):
        proc, _ = stage_process(["-c", wrapper, *args], _tiny_params(params, device))
        found = re.search(r"first update done ([0-9.]+) s", proc.stderr)
        if proc.returncode != 0 or not found:
            raise _failed("the stage did not report its first update", proc)
        times.append(float(found.group(1)))
    return times


# The other kinds of stage, each timed as a whole process (:func:`stage_process`). "light"
# is a stage that imports no torch: experiment@<task> at the paper defaults (whose whole run
# is this) and a linear student-teacher cell (whose compute is timed apart). evaluate and
# report are timed importing their module: their compute reads trained cells, and the
# estimate leaves it out.
OTHER_STAGES: dict[str, list[str]] = {
    "generate": ["-m", "groklab.stages.generate", "x_plus_y"],
    "light": ["-m", "groklab.stages.train", "experiment", "x_plus_y"],
    "evaluate": ["-c", "import groklab.stages.evaluate"],
    "report": ["-c", "import groklab.stages.report"],
}


def other_startups(params: dict[str, Any], runs: int) -> dict[str, float]:
    """Median seconds of ``runs`` real processes of each :data:`OTHER_STAGES` kind, with a
    tiny params.yaml."""
    tiny = _tiny_params(params, "cpu")
    # experiment@ at the paper defaults, which trains nothing
    tiny.update({knob: get_key(params, key) for knob, key in KNOBS.items()})
    out = {}
    for kind, argv in OTHER_STAGES.items():
        times = []
        for _ in range(runs):
            proc, seconds = stage_process(argv, tiny)
            if proc.returncode != 0:
                raise _failed(f"the {kind} stage failed", proc)
            times.append(seconds)
        out[kind] = statistics.median(times)
    return out


# --- the pipeline -------------------------------------------------------------------------


def pipeline_cells(params: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every cell `dvc repro` trains, as (stage name, configuration): the base runs, every
    study's cells and the experiment when its knobs differ from the paper defaults."""
    cells = [(c.stage, cell_config(params, c)) for c in trained_cells(params)]
    return cells + [(c.stage, cell_config(params, c)) for c in experiment_training(params)]


def shape_key(cfg: RunConfig) -> str:
    """What an update's cost depends on: the configuration without its budget, with any
    augmentation and any curriculum standing for all of them (their cost barely differs)."""
    aug = AugmentConfig("combined30", 0.3, 0.3) if cfg.train.aug.active else AugmentConfig()
    curriculum = CurriculumConfig() if cfg.train.curriculum.pacing == "none" else \
        CurriculumConfig("linear", "linear", "easiest_first", 0.2, 0.5)
    shape = cfg.replace(train={"steps": 1, "stop_after_grok": None, "aug": aug,
                               "curriculum": curriculum})
    return json.dumps(shape.to_dict(), sort_keys=True)


def linear_cell_s(cfg: LinearTeacherConfig, seeds: list[int]) -> float:
    """Seconds of one linear student-teacher cell (its cost does not depend on λ)."""
    from groklab.linear_teacher import run_cell

    start = time.perf_counter()
    run_cell(cfg, seeds)
    return time.perf_counter() - start


def stage_kinds(params: dict[str, Any]) -> dict[str, int]:
    """How many stages of each start-up kind `dvc repro` runs: "train" for every network cell
    (base runs, study cells, an experiment whose knobs differ), "light" for the linear cells
    and the experiments at the paper defaults, then generate@<task>, evaluate and report."""
    cells = pipeline_cells(params)
    linear = sum(isinstance(cfg, LinearTeacherConfig) for _, cfg in cells)
    return {"train": len(cells) - linear, "generate": len(params["baseline"]["tasks"]),
            "light": linear + len(params["tasks"]) - len(experiment_training(params)),
            "evaluate": 1, "report": 1}


def experiment_training(params: dict[str, Any]) -> list[Any]:
    """The experiment@<task> cells whose knobs differ from the paper defaults."""
    return [c for c in experiment_cells(params) if experiment_source(params, c.task) is None]


def pipeline_estimate(params: dict[str, Any], steps: int, startup_s: float | None,
                      other_s: dict[str, float] | None = None,
                      timings: dict[tuple[str, int], float | tuple[float, float]] | None = None
                      ) -> dict[str, Any]:
    """Training time of every cell (its shape timed once) plus start-up per stage, each
    charged its kind's (``startup_s`` for training stages, ``other_s`` for the rest).

    ``timings`` caches what was timed, by (shape, number of seeds), so that several
    pipelines estimated in one run time each shape once.
    """
    seeds = list(params["seeds"])
    timings = {} if timings is None else timings
    cells = pipeline_cells(params)
    train_s = 0.0
    per_stage: dict[str, float] = {}
    shapes = set()
    for stage, cfg in cells:
        if isinstance(cfg, LinearTeacherConfig):  # its cost does not depend on its values
            key = ("linear", len(seeds))
            if key not in timings:
                timings[key] = linear_cell_s(cfg, seeds)
                print(f"  linear cell ({stage}): {timings[key]:5.2f} s", flush=True)
            cell_s = timings[key]
        else:
            key = (shape_key(cfg), len(seeds))
            shapes.add(key)
            if key not in timings:
                shape = RunConfig.from_dict(json.loads(key[0]))
                timings[key] = timing(shape, list(range(len(seeds))), steps)
                print(f"  shape {len(shapes):2d} ({stage}): {timings[key][0]:8.2f} "
                      f"ms/update, fixed {timings[key][1]:5.2f} s", flush=True)
            ms, setup = timings[key]
            cell_s = setup + cfg.train.steps * ms / 1e3
        per_stage[stage] = round(cell_s, 2)
        train_s += cell_s
    kinds = stage_kinds(params)
    startup_total = None
    if startup_s is not None and other_s is not None:
        each = {"train": startup_s, **other_s}
        startup_total = sum(n * each[kind] for kind, n in kinds.items())
    return {"pipeline_estimate_s": round(train_s + (startup_total or 0.0), 1),
            "pipeline_train_s": round(train_s, 1),
            "pipeline_startup_s": None if startup_total is None else round(startup_total, 1),
            "pipeline_cells": len(cells), "pipeline_shapes": len(shapes),
            "pipeline_stages": sum(kinds.values()), "pipeline_stage_kinds": kinds,
            "pipeline_cell_s": per_stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=None,
                        help="updates per timing (default 300 on a GPU, 20 on a CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 3, 10, 30],
                        help="numbers of batched seeds to time")
    parser.add_argument("--reference-steps", type=int, default=50,
                        help="updates timed for the reference-style loop (0 skips it)")
    parser.add_argument("--eager-steps", type=int, default=None,
                        help="updates timed for the plain (eager) loop with 3 seeds, to compare "
                             "with the graphs (default 60 on a GPU, 0 = skip, on a CPU)")
    parser.add_argument("--full-cell", action="store_true",
                        help="time one full 7,500-update cell of 3 seeds on a CPU too (minutes)")
    parser.add_argument("--no-cell", action="store_true", help="skip the cell figure")
    parser.add_argument("--startup-runs", type=int, default=5,
                        help="stage start-ups to time (median; 0 skips)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml",
                        help="the pipeline whose run time is estimated")
    parser.add_argument("--also-estimate", type=Path, nargs="*", default=[], metavar="PARAMS",
                        help="more params files (e.g. the first look's) estimated with the same "
                             "start-ups and shape timings: `estimates` in the JSON, by path")
    parser.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, default=None,
                        help="train.matmul_precision for every figure (default: --params')")
    parser.add_argument("--pipeline-steps", type=int, default=None,
                        help="updates per distinct cell shape (default 200 on a GPU, 10 on a "
                             "CPU; 0 skips the estimate)")
    args = parser.parse_args()

    params = load_params(args.params)
    if args.matmul_precision:
        params["train"]["matmul_precision"] = args.matmul_precision
    precision = params["train"]["matmul_precision"]
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    steps = args.steps or (300 if gpu else 20)
    cfg = RunConfig().replace(train={"device": args.device, "matmul_precision": precision})
    engine = resolve_engine("auto", device)
    name = torch.cuda.get_device_name(device) if gpu else platform.processor() or \
        platform.machine()
    out: dict[str, Any] = {"device": str(device), "machine": name, "engine": engine,
                           "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "date": datetime.date.today().isoformat(),
                           "matmul_precision": precision}
    print(f"{name}: device {device}, engine {engine}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, matmul precision {precision}")
    time_train(cfg, [0], cfg.train.eval_every)  # first call pays one-off initialisation

    ms: dict[int, float] = {}
    for n in args.seeds:
        ms[n], setup = timing(cfg, list(range(n)), steps, args.repeats)
        print(f"{n:2d} batched seed(s):       {ms[n]:8.3f} ms/update "
              f"({ms[n] / n:.3f} per seed-update; fixed {setup:.2f} s per cell)", flush=True)
    out["ms_per_update"] = {str(n): round(v, 3) for n, v in ms.items()}
    if 1 in ms:
        out["batched_seeds_relative"] = {str(n): round(v / ms[1], 2) for n, v in ms.items()}
    if 3 in ms and 10 in ms:
        out["seeds_10_over_3"] = round(ms[10] / ms[3], 2)
        print(f"10 seeds cost {out['seeds_10_over_3']:.2f}x 3 seeds")
    base = ms.get(1, next(iter(ms.values()), None))
    if base:
        with float32_matmuls(device, precision):
            peak = matmul_gflops(device)
        train_flops, eval_flops = update_flops(cfg, device)
        achieved = (train_flops + eval_flops) / (base / 1e3) / 1e9
        out.update({"matmul_gflops": round(peak, 1),
                    "update_gflop": round((train_flops + eval_flops) / 1e9, 3),
                    "achieved_gflops": round(achieved, 1),
                    "fraction_of_peak": round(achieved / peak, 4)})
        print(f"float32 matmul peak:      {peak:8.1f} GFLOP/s; one seed's update "
              f"{out['update_gflop']:.3f} GFLOP reaches {achieved / peak:.2%} of it")
    if args.reference_steps and base:
        ref = statistics.median(time_reference_style(cfg, args.reference_steps, device)
                                for _ in range(args.repeats))
        out["reference_ms_per_update"] = round(ref, 2)
        out["speedup_vs_reference"] = round(ref / base, 2)
        print(f"reference-style loop:     {ref:8.2f} ms/update -> {ref / base:.1f}x slower "
              "than one seed here")
    eager_steps = args.eager_steps if args.eager_steps is not None else (60 if gpu else 0)
    if eager_steps and engine != "loop":
        eager, _ = timing(cfg, [0, 1, 2], eager_steps, 1, engine="loop")
        out["eager_loop_ms_per_update_3_seeds"] = round(eager, 3)
        print(f"plain eager loop, 3 seeds: {eager:7.3f} ms/update")

    three = [0, 1, 2]
    if args.no_cell:
        pass
    elif gpu or args.full_cell:
        out["cell_s"] = round(time_train(cfg, three, cfg.train.steps)[2], 2)
        out["cell_s_measured"] = True
    else:
        per, setup = timing(cfg, three, steps)
        out["cell_s"] = round(setup + per * cfg.train.steps / 1e3, 1)
        out["cell_s_measured"] = False
    if "cell_s" in out:
        print(f"one base cell (7,500 updates x 3 seeds): {out['cell_s']:.1f} s "
              f"({'measured' if out['cell_s_measured'] else 'estimated'})")

    startup = other = None
    if args.startup_runs:
        runs = stage_startup(params, args.device, args.startup_runs)
        startup = statistics.median(runs)
        out["startup_s"] = round(startup, 2)
        out["startup_runs_s"] = [round(t, 2) for t in runs]
        print(f"stage start-up to the first update: median {startup:.2f} s of {runs}")
        other = other_startups(params, args.startup_runs)
        out["startup_other_s"] = {kind: round(t, 2) for kind, t in other.items()}
        print("other stages' start-up (median): " +
              ", ".join(f"{kind} {t:.2f} s" for kind, t in other.items()))
    pipeline_steps = args.pipeline_steps if args.pipeline_steps is not None else (
        200 if gpu else 10)
    if pipeline_steps:
        timings: dict[tuple[str, int], Any] = {}
        for path in [args.params, *args.also_estimate]:
            print(f"pipeline of {path}: timing each distinct cell shape not yet timed")
            pipeline = params if path == args.params else load_params(path)
            if args.matmul_precision:
                pipeline["train"]["matmul_precision"] = args.matmul_precision
            est = pipeline_estimate(pipeline, pipeline_steps, startup, other, timings)
            print(f"pipeline estimate of {path}: {est['pipeline_estimate_s']:.0f} s "
                  f"({est['pipeline_cells']} cells in {est['pipeline_shapes']} shapes: "
                  f"{est['pipeline_train_s']:.0f} s training + start-up of "
                  f"{est['pipeline_stages']} stages)")
            if path == args.params:
                out.update(est)
            else:
                out.setdefault("estimates", {})[str(path)] = est
    print(json.dumps(out))


if __name__ == "__main__":
    main()
