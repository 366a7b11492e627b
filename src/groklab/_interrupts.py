"""Ctrl-C while an entry point is still importing: one line and exit 130, no traceback.

``groklab run`` and the stage scripts import this module first (its name sorts first), so
the hook is in place before torch, pandas or MLflow load, which take a second or more.
Once an entry point runs, its own handler (``groklab.cli.main``,
``groklab.stages.common.fail_cleanly``) takes over; this hook sees only a Ctrl-C that
reaches the interpreter's top level. Importing the module installs it.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

_default = sys.excepthook


def _hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        print("groklab: interrupted while starting; nothing written", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)
    _default(kind, value, tb)


sys.excepthook = _hook
