"""What every stage entry point shares: clean failures and its MLflow run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from groklab.config import ConfigError
from groklab.errors import TrainingDiverged
from groklab.stages.outputs import FULL
from groklab.tracking import StageTracker, stage_tracker


def fail_cleanly(main: Callable[[], Any]) -> None:
    """Run ``main``; an expected failure is one line on stderr: a configuration, training or
    file-system error (exit 1) or Ctrl-C (exit 130). Anything else keeps its traceback."""
    try:
        main()
    except KeyboardInterrupt as err:  # Interrupted says "interrupted at update N"
        print(f"groklab: {str(err) or 'interrupted'}; nothing written; rerun to resume",
              file=sys.stderr)
        sys.exit(130)
    except (ConfigError, TrainingDiverged) as err:
        print(f"groklab: error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:  # a path the OS refused, or a missing input a stage names
        if err.filename is not None:
            print(f"groklab: error: {err.filename}: {err.strerror}", file=sys.stderr)
        elif err.errno is None and err.args:
            print(f"groklab: error: {err}", file=sys.stderr)
        elif err.errno in FULL:  # a write without a path: the disk, quota or ulimit -f
            print(f"groklab: error: {err.strerror}; free space and rerun", file=sys.stderr)
        else:  # not about a path (a socket, ...): unexpected, keep the traceback
            raise
        sys.exit(1)


def tracker_for(experiment: str, stage: str, *, task: str | None = None,
                variant: str | None = None, params: Mapping[str, Any] | None = None
                ) -> StageTracker:
    """The MLflow run of one stage execution, to enter after training (see groklab.tracking).

    Named ``<task> · <variant>`` in the UI; tagged with the DVC stage, study, git commit, host
    and process. MLflow is imported and connected only when it is entered.
    """
    return stage_tracker(experiment, stage, task=task, variant=variant, params=params)
