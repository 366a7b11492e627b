"""``groklab run``: train one configuration for one seed, outside the pipeline.

Defaults are the base run of params.yaml (the papers' settings), and ``--aug``,
``--curriculum`` and ``--optimizer`` take the names of its registries, so a single run means
what the pipeline means. Progress goes to stderr; the last line of stdout is a JSON
summary of the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import groklab._interrupts  # noqa: F401 - first: a Ctrl-C while importing is one line
from groklab.budget import check_run_memory
from groklab.config import (
    DEVICES,
    ENCODINGS,
    MATMUL_PRECISIONS,
    TASKS,
    ConfigError,
    RunConfig,
    check_seed,
)
from groklab.cpu import CpuShare
from groklab.errors import OneLineParser, TrainingDiverged
from groklab.metrics import Analysis
from groklab.params import PARAMS_FILE, load_params, read_params, run_config
from groklab.progress import ProgressBar
from groklab.stages.outputs import check_not_dvc_output, check_writable, save_run
from groklab.summary import seed_summaries
from groklab.train import train

_FULL = object()  # --batch-size full: the whole training split every update


def _batch_size(text: str) -> int | object:
    if text == "full":
        return _FULL
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or 'full'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive (or 'full')")
    return value


def registry_names(argv: list[str] | None) -> dict[str, str]:
    """Per registry, its names in the params file ``--params`` names (for the help), or
    "" when that file cannot be read (the run itself then says why, in one line)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--params", default=PARAMS_FILE)
    path = pre.parse_known_args(argv)[0].params
    try:
        params = read_params(path)
        return {r: ", ".join(map(str, params[r])) for r in ("augmentations", "curricula",
                                                             "optimizers")}
    except (ConfigError, KeyError, TypeError):
        return dict.fromkeys(("augmentations", "curricula", "optimizers"), "")


def build_parser(names: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``groklab``; ``names``: each registry's names, listed in the help."""
    names = names or {}

    def listed(registry: str) -> str:
        return f" ({names[registry]})" if names.get(registry) else ""

    parser = OneLineParser(prog="groklab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one configuration for one seed",
                         description="Train one configuration for one seed. Every setting "
                         "not given is the base run of params.yaml: p=97, fraction 0.5, "
                         "2-layer width-128 Transformer, AdamW, batch 512, 7500 updates.")
    run.add_argument("--params", default=PARAMS_FILE,
                     help="params.yaml whose base run and named variants to use")
    run.add_argument("--task", default="x_plus_y", choices=TASKS, help="the equations")
    run.add_argument("--aug", help="augmentation: a name from `augmentations` in params.yaml"
                     + listed("augmentations"))
    run.add_argument("--curriculum", help="a name from `curricula` in params.yaml"
                     + listed("curricula"))
    run.add_argument("--arch", help="model architecture (transformer, mlp, lstm, bit_mlp)")
    run.add_argument("--optimizer", help="a name from `optimizers` in params.yaml"
                     + listed("optimizers"))
    run.add_argument("--p", type=int, help="modulus of the modular tasks")
    run.add_argument("--train-fraction", type=float,
                     help="fraction of all equations used for training, in (0, 1)")
    run.add_argument("--encoding", choices=ENCODINGS,
                     help="full: [a, op, b, =]; compact: [a, b, =]")
    run.add_argument("--operands", type=int, help="number of operands K of multi_add")
    run.add_argument("--concealed-bits", type=int,
                     help="random bits appended to each parity example")
    run.add_argument("--steps", type=int, help="number of updates")
    run.add_argument("--batch-size", type=_batch_size,
                     help="examples per update, sampled with replacement, or 'full'")
    run.add_argument("--eval-every", type=int,
                     help="updates between evaluations of the whole validation split")
    run.add_argument("--stop-after-grok", type=int,
                     help="stop this many updates after validation accuracy reaches 0.99 "
                     "(default: params.yaml's train.stop_after_grok)")
    run.add_argument("--seed", type=int, default=0, help="seed of the split, init and batches")
    run.add_argument("--device", choices=DEVICES, help="auto uses CUDA when available")
    run.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS,
                     help="GPU float32 matmuls: highest (float32) or high (TF32, faster)")
    run.add_argument("--out", type=Path, default=None,
                     help="directory for history.csv, final.csv, checkpoint and summary.json")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


# Flag -> the key of the run it sets.
FLAGS = {"aug": "train.aug", "curriculum": "train.curriculum", "arch": "model.arch",
         "optimizer": "train.optimizer", "p": "data.p", "train_fraction": "data.train_fraction",
         "encoding": "data.encoding", "operands": "data.operands",
         "concealed_bits": "data.concealed_bits", "steps": "train.steps",
         "batch_size": "train.batch_size", "eval_every": "train.eval_every",
         "stop_after_grok": "train.stop_after_grok",
         "matmul_precision": "train.matmul_precision"}


def config_from_args(args: argparse.Namespace, params: dict) -> RunConfig:
    """The base run of ``params`` for ``--task``, with every flag given applied."""
    changes = {key: getattr(args, flag) for flag, key in FLAGS.items()
               if getattr(args, flag) is not None}
    if args.batch_size is _FULL:
        changes["train.batch_size"] = None
    cfg = run_config(params, args.task, changes)
    if args.device is not None:
        cfg = cfg.replace(train={"device": args.device})
    return cfg


def run(args: argparse.Namespace) -> dict:
    check_seed(args.seed)
    params = load_params(args.params)
    cfg = config_from_args(args, params)
    check_run_memory(cfg, 1, "this run")  # before anything is built
    if args.out is not None:
        check_writable(args.out)  # before training: a bad path costs no compute
        check_not_dvc_output(args.out)
    label = f"{cfg.data.task} {cfg.train.aug.name} seed {args.seed}"
    with (CpuShare(cfg.train.device),
          ProgressBar(label, cfg.train.steps, disable=args.quiet) as bar):
        result = train(cfg, [args.seed], progress=bar.update)
    summary = seed_summaries(result, Analysis.from_params(params))[0]
    if args.out is not None:
        save_run(result, args.out, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 1 when training diverged, 2 for bad input (a flag's value or
    ``--out``), 130 on Ctrl-C; each failure is one line on stderr."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser(registry_names(argv)).parse_args(argv)
    try:
        summary = run(args)
    except KeyboardInterrupt as err:  # train's Interrupted says "interrupted at update N"
        print(f"groklab: {str(err) or 'interrupted'}; nothing written; rerun to resume",
              file=sys.stderr)
        return 130
    except ConfigError as err:  # OutputError included
        print(f"groklab: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"groklab: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(json_safe(summary), allow_nan=False))  # strict JSON: null, never NaN
    return 0


def json_safe(value: object) -> object:
    """``value`` with every non-finite float (NaN, inf) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
