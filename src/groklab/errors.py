"""How a training run ends early, importable without torch.

The stage entry points catch these to print one line; the stages that train nothing (an
``experiment@`` stage at the paper defaults, a linear student-teacher cell) must not pay
torch's import to do so. Configuration errors are :class:`groklab.config.ConfigError`.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``step`` is the update that was running."""

    def __init__(self, step: int):
        super().__init__(f"interrupted at update {step}")
        self.step = step


class OneLineParser(argparse.ArgumentParser):
    """argparse whose own errors (a flag's type, a missing argument) are one line and exit 2,
    like groklab's: not the usage block first."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"groklab: error: {message} (see {self.prog} --help)\n")
