"""``groklab run``: train one configuration for one seed, outside the pipeline.

Defaults are the papers' base configuration (DESIGN.md). Progress goes to stderr; the
last line of stdout is a JSON summary of the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from groklab.config import (
    ARCHS,
    AUGMENTATIONS,
    CURRICULA,
    DEVICES,
    ENCODINGS,
    TASKS,
    ConfigError,
    RunConfig,
    check_seed,
)
from groklab.cpu import CpuShare
from groklab.presets import OPTIMIZERS, apply_variant
from groklab.progress import ProgressBar
from groklab.stages.outputs import check_writable, save_run
from groklab.summary import seed_summaries
from groklab.train import TrainingDiverged, train


def _batch_size(text: str) -> int | None:
    if text == "full":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or 'full'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive (or 'full')")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groklab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one configuration for one seed",
                         description="Train one configuration for one seed. Defaults are the "
                         "base configuration: p=97, fraction 0.5, 2-layer width-128 Transformer, "
                         "AdamW, batch 512, 7500 updates.")
    base = RunConfig()
    run.add_argument("--task", default=base.data.task, choices=TASKS, help="the equations")
    run.add_argument("--aug", default=base.train.aug, choices=AUGMENTATIONS,
                     help="augmentation of sampled training examples")
    run.add_argument("--curriculum", default=base.train.curriculum.name, choices=CURRICULA,
                     help="pacing of the training pool")
    run.add_argument("--arch", default=base.model.arch, choices=ARCHS, help="model architecture")
    run.add_argument("--optimizer", default="adamw", choices=list(OPTIMIZERS),
                     help="named optimiser variant of the papers")
    run.add_argument("--p", type=int, default=base.data.p, help="modulus of the modular tasks")
    run.add_argument("--train-fraction", type=float, default=base.data.train_fraction,
                     help="fraction of all equations used for training, in (0, 1)")
    run.add_argument("--encoding", default=base.data.encoding, choices=ENCODINGS,
                     help="full: [a, op, b, =]; compact: [a, b, =]")
    run.add_argument("--operands", type=int, default=base.data.operands,
                     help="number of operands K of multi_add")
    run.add_argument("--concealed-bits", type=int, default=base.data.concealed_bits,
                     help="random bits appended to each parity example")
    run.add_argument("--steps", type=int, default=base.train.steps, help="number of updates")
    run.add_argument("--batch-size", type=_batch_size, default=base.train.batch_size,
                     help="examples per update, sampled with replacement, or 'full'")
    run.add_argument("--eval-every", type=int, default=base.train.eval_every,
                     help="updates between evaluations of the whole validation split")
    run.add_argument("--stop-after-grok", type=int, default=None,
                     help="stop this many updates after validation accuracy reaches 0.99 "
                     "(default: train the full budget)")
    run.add_argument("--seed", type=int, default=0, help="seed of the split, init and batches")
    run.add_argument("--device", default=base.train.device, choices=DEVICES,
                     help="auto uses CUDA when available")
    run.add_argument("--out", type=Path, default=None,
                     help="directory for history.csv, final.csv, checkpoint and summary.json")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig().replace(
        data={"task": args.task, "p": args.p, "train_fraction": args.train_fraction,
              "encoding": args.encoding, "operands": args.operands,
              "concealed_bits": args.concealed_bits},
        model={"arch": args.arch},
        train={"steps": args.steps, "batch_size": args.batch_size, "eval_every": args.eval_every,
               "aug": args.aug, "stop_after_grok": args.stop_after_grok, "device": args.device,
               "curriculum": {"name": args.curriculum}},
    )
    return apply_variant(cfg, args.optimizer)


def run(args: argparse.Namespace) -> dict:
    check_seed(args.seed)
    cfg = config_from_args(args)
    if args.out is not None:
        check_writable(args.out)  # before training: a bad path costs no compute
    label = f"{cfg.data.task} {cfg.train.aug} seed {args.seed}"
    with (CpuShare(cfg.train.device),
          ProgressBar(label, cfg.train.steps, disable=args.quiet) as bar):
        result = train(cfg, [args.seed], progress=bar.update)
    summary = seed_summaries(result)[0]
    if args.out is not None:
        save_run(result, args.out, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 1 when training diverged, 2 for bad input (a flag's value or
    ``--out``), 130 on Ctrl-C; each failure is one line on stderr."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
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
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
