"""The machine a cell ran on: CPU model or GPU name, torch version, thread count, device.

Written into each cell's summary.json and its MLflow run's tags, never into config.json:
the configuration (and DVC's hash of it) must not change from one machine to another.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what :mod:`platform` says."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_record(device: Any = None) -> dict[str, Any]:
    """``{"device", "cpu", "gpu", "threads", "torch", "python"}`` for a run on ``device``
    (a ``torch.device`` or its name; None: a run that used no torch, e.g. the linear
    model). ``gpu`` is the CUDA device's name, None on the CPU; ``threads`` and ``torch``
    are None when torch was not loaded (the run used none)."""
    torch = sys.modules.get("torch")
    name = "cpu" if device is None else str(device)
    gpu = None
    if torch is not None and name.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(name))
    return {
        "device": name,
        "cpu": cpu_model(),
        "gpu": gpu,
        "threads": torch.get_num_threads() if torch is not None else None,
        "torch": torch.__version__ if torch is not None else None,
        "python": platform.python_version(),
    }


def machine_tags(record: dict[str, Any]) -> dict[str, str]:
    """The record as MLflow tags (``machine.<key>``), leaving out what is unknown."""
    return {f"machine.{k}": str(v) for k, v in record.items() if v is not None}
