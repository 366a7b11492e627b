"""What every stage entry point shares: clean failures and its MLflow run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from groklab.config import ConfigError
from groklab.tracking import StageTracker, stage_tracker
from groklab.train import TrainingDiverged


def fail_cleanly(main: Callable[[], Any]) -> None:
    """Run ``main``; a configuration or training error is one line on stderr, exit 1."""
    try:
        main()
    except (ConfigError, TrainingDiverged, FileNotFoundError) as err:
        print(f"groklab: error: {err}", file=sys.stderr)
        sys.exit(1)


def tracker_for(experiment: str, stage: str, *, task: str | None = None,
                variant: str | None = None, params: Mapping[str, Any] | None = None
                ) -> StageTracker:
    """The MLflow run of one stage execution, to enter after training (see groklab.tracking).

    Named ``<task> · <variant>`` in the UI; tagged with the DVC stage, study, git commit, host
    and process. MLflow is imported and connected only when it is entered.
    """
    return stage_tracker(experiment, stage, task=task, variant=variant, params=params)
