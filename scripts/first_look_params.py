"""Print params.yaml with the Makefile's FIRST_LOOK overrides applied, as `make first-look`
runs it, through DVC's own override parser (so it needs dvc).

    python scripts/first_look_params.py > /tmp/first-look.yaml

`benchmarks/train_speed.py --params /tmp/first-look.yaml` then estimates the first look's
run time on a machine (dvc need not be installed there).
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_look_overrides() -> list[str]:
    """The arguments of the Makefile's FIRST_LOOK, as the shell splits them."""
    text = (ROOT / "Makefile").read_text()
    block = re.search(r"^FIRST_LOOK := (.*?)(?<!\\)\n", text, re.S | re.M).group(1)
    return shlex.split(block.replace("\\\n", " "))


def first_look_params(path: Path) -> None:
    """Write params.yaml with FIRST_LOOK's ``-S`` overrides applied to ``path``."""
    from dvc.utils.hydra import apply_overrides

    args = first_look_overrides()
    if args[::2] != ["-S"] * (len(args) // 2):
        raise SystemExit(f"FIRST_LOOK has arguments other than -S overrides: {args}")
    shutil.copy(ROOT / "params.yaml", path)
    apply_overrides(path, args[1::2])


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "params.yaml")
        first_look_params(out)
        sys.stdout.write(out.read_text())
