"""This project copied into a fresh git repo with tiny params, for the end-to-end tests."""

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def merge(base: dict, small: dict) -> dict:
    """``base`` with ``small``'s values; mappings merge, except value_settings (replaced)."""
    out = dict(base)
    for key, value in small.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict) \
            and key != "value_settings"
        out[key] = merge(base[key], value) if nested else value
    return out


# What the pipeline writes, committed with the repo (the full-scale results): a copy with
# other params starts without them, as a project before its first `dvc repro`.
PRODUCED = ("dvc.lock", "data/", "models/", "checkpoints/", "reports/")


def copy_project(dest: Path, params: dict) -> Path:
    """The files git tracks or would track, except the pipeline's results (``PRODUCED``),
    in ``dest`` as one commit on ``main``, with ``params`` merged into params.yaml; ``dest``
    is returned."""
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=dest,
                       check=True, capture_output=True, text=True)

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file() and not rel.startswith(PRODUCED):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    base = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(merge(base, params), sort_keys=False))
    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-qm", "A copy of the project with tiny params")
    return dest
