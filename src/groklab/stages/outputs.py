"""Writing a trained cell to disk, atomically: a failed run never clobbers finished results."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``out``; it replaces ``out`` only if the block succeeds."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False, default=_plain) + "\n")


def _plain(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serialisable: {x!r}")


def save_run(result: Any, out: Path, summary: dict[str, Any] | None = None,
             card: dict[str, Any] | None = None) -> None:
    """history.csv, final.csv, config.json (and summary.json, card.json when given); for a
    trained network (a :class:`~groklab.train.TrainResult`) also one checkpoint per seed."""
    model = getattr(result, "model", None)
    with atomic_dir(out) as tmp:
        result.history.to_csv(tmp / "history.csv", index=False)
        result.final.to_csv(tmp / "final.csv", index=False)
        write_json(tmp / "config.json", {
            "kind": "network" if model is not None else "linear_teacher",
            "config": dataclasses.asdict(result.config), "seeds": result.seeds,
            "steps_done": result.steps_done})
        if model is not None:
            import torch

            from groklab.checkpoint import checkpoint

            for i, seed in enumerate(result.seeds):
                ckpt = checkpoint(model, result.config, result.seeds, i, result.steps_done)
                torch.save(ckpt, tmp / f"seed{seed}.pt")
        if summary is not None:
            write_json(tmp / "summary.json", summary)
        if card is not None:
            write_json(tmp / "card.json", card)
