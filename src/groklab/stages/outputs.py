"""Writing results to disk, atomically: a failed run never clobbers finished results, and a
user's file is never moved, renamed or overwritten.

Every directory :func:`atomic_dir` writes holds a manifest, ``.groklab``, listing the files
it wrote. An existing ``out`` is replaced only when it is an empty directory or a groklab
result: a directory with a manifest and nothing besides the files the manifest lists. A
file, a link, or a directory holding anything else (a user's notes beside the results) is
refused, with one line naming the path, before any training (:func:`check_writable`).
Directories and files get the permissions the umask gives, as any file the user creates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from groklab.config import ConfigError

MANIFEST = ".groklab"
# A write that failed because the disk (or the quota, or the file-size limit) is full.
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_MANIFEST_HEAD = "# written by groklab; a rerun may replace this directory and the files below\n"


class OutputError(ConfigError):
    """``out`` cannot take a result; the message names the path and why."""


def check_writable(out: Path) -> None:
    """Raise :class:`OutputError` unless a result can be written at ``out``: it is missing
    or replaceable (see the module docstring) and its nearest existing parent takes a new
    directory. Call it before training, so a bad path costs no compute."""
    out = Path(out)
    try:
        if out.is_symlink() or out.exists():
            _check_replaceable(out)
        base = out.parent
        while not base.exists():
            base = base.parent
        if not base.is_dir():
            raise OutputError(f"cannot write {out}: {base} is a file, not a directory")
    except OSError as err:
        raise OutputError(f"cannot write {out}: {err.strerror or err}") from None
    try:  # the real test: what permissions, a read-only disk or root would allow
        os.rmdir(tempfile.mkdtemp(prefix=_temp_prefix(out), dir=base))
    except OSError as err:
        raise OutputError(f"cannot write {out}: cannot create a directory in {base}: "
                          f"{err.strerror or err}") from None


def check_not_dvc_output(out: Path) -> None:
    """Raise :class:`OutputError` when ``out`` is, or lies inside, an output of a DVC
    pipeline (a stage's or a ``dvc add``'s): a result written there by hand would replace
    what ``dvc repro`` made, and ``dvc status`` would call it changed. For ``groklab run``;
    stages write their own outputs. Outside a DVC project this costs nothing."""
    out = Path(out).absolute()
    root = next((d for d in (out, *out.parents) if (d / ".dvc").is_dir()), None)
    if root is None:
        return
    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            outs = [(Path(o.fs_path), o.stage.addressing) for o in repo.index.outs]
    except Exception:  # noqa: BLE001 - a project DVC cannot read: `dvc` itself will say so
        return
    for path, stage in outs:
        if out == path or path in out.parents:
            where = "is" if out == path else "is inside"
            raise OutputError(f"{out} {where} {path.relative_to(root)}, the output of DVC "
                              f"stage {stage}: `dvc repro` owns it; choose a path outside "
                              "the pipeline's outputs (e.g. runs/<name>)")


def _check_replaceable(out: Path) -> None:
    if out.is_symlink():
        raise OutputError(f"{out} is a symbolic link; groklab replaces only a directory it "
                          "wrote: choose another path or remove the link")
    if not out.is_dir():
        raise OutputError(f"{out} is a file, not a results directory; groklab never "
                          "overwrites a file: choose another path or remove the file")
    if os.path.ismount(out) or _immutable(out):
        why = "a mount point" if os.path.ismount(out) else "immutable (chattr +i or +a)"
        raise OutputError(f"{out} is {why}, so it cannot be replaced: groklab renames a "
                          "finished result into place; choose a path inside it or elsewhere")
    found = {p.relative_to(out).as_posix(): p.is_dir() and not p.is_symlink()
             for p in out.rglob("*")}
    if not found:
        return
    if MANIFEST not in found:
        raise OutputError(f"{out} is a directory groklab did not write (it has no {MANIFEST} "
                          "manifest); choose another path or empty it")
    listed = _read_manifest(out / MANIFEST)
    parents = {q.as_posix() for f in listed for q in Path(f).parents if q != Path(".")}
    extra = sorted(f for f, is_dir in found.items()
                   if f != MANIFEST and f not in (parents if is_dir else listed))
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise OutputError(f"{out} holds files groklab did not write ({shown}); move them "
                          "out or choose another path")


def _immutable(path: Path) -> bool:
    """Whether the file system forbids renaming ``path`` (Linux inode flags immutable or
    append-only, FS_IOC_GETFLAGS); False where the flags cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        import fcntl

        flags = fcntl.ioctl(fd, 0x80086601, b"\0" * 8)  # FS_IOC_GETFLAGS
    except (OSError, ImportError):
        return False
    finally:
        os.close(fd)
    return bool(int.from_bytes(flags[:4], "little") & (0x10 | 0x20))  # IMMUTABLE | APPEND


def _read_manifest(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def _write_manifest(directory: Path) -> None:
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if not p.is_dir() or p.is_symlink())
    (directory / MANIFEST).write_text(_MANIFEST_HEAD + "".join(f"{f}\n" for f in files))


def _temp_prefix(out: Path) -> str:
    """Temporary siblings of ``out`` carry the writer's pid, so a rerun can tell the
    leftovers of a killed writer from those of a live one."""
    return f".{out.name}.groklab-{os.getpid()}-"


def _remove_leftovers(out: Path) -> None:
    """Delete temporary siblings of ``out`` left by writers that no longer run."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.groklab-(\d+)-\w+")
    for path in out.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and not _alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``out``; it replaces ``out`` only if the block succeeds.

    Refuses (:class:`OutputError`) an ``out`` that is not replaceable, before the block runs.
    """
    out = Path(out)
    check_writable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out), dir=out.parent))
    old = None
    try:
        yield tmp
        _write_manifest(tmp)
        tmp.chmod(0o777 & ~_umask())  # mkdtemp made it 0700
        if out.is_symlink() or out.exists():
            _check_replaceable(out)  # again: the block may have run for hours
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(out), dir=out.parent))
            out.rename(old)  # onto the empty directory just made
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException as err:
        written = _bytes_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.is_dir() and not any(old.iterdir()):
            old.rmdir()  # made above, and out was never moved onto it
        if isinstance(err, OSError) and err.errno in FULL:
            free = shutil.disk_usage(out.parent).free
            raise OutputError(f"cannot write {out}: {os.strerror(err.errno)} after {written:,} "
                              f"bytes ({free:,} bytes free on its device); the result needs "
                              "more: free space and rerun (nothing was written)") from None
        raise


def _full_errno(directory: Path) -> int | None:
    """ENOSPC when ``directory``'s device has under 1 MiB free, EFBIG under a file-size
    limit (ulimit -f), else None: why a write there may have failed without saying."""
    import resource

    if shutil.disk_usage(directory).free < 2**20:
        return errno.ENOSPC
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return errno.EFBIG
    return None


def _bytes_under(directory: Path) -> int:
    try:
        return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    except OSError:
        return 0


def write_json(path: Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False, default=_plain) + "\n")


def _plain(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serialisable: {x!r}")


def save_run(result: Any, out: Path, summary: dict[str, Any] | None = None,
             card: dict[str, Any] | None = None, checkpoints: Path | None = None) -> None:
    """history.csv, final.csv, config.json (and summary.json, card.json when given;
    measures.csv when the run was measured); for a trained network (a
    :class:`~groklab.train.TrainResult`) also one checkpoint per seed, ``seed<k>.pt``, in
    ``checkpoints`` when given (the pipeline keeps them apart: the results are committed to
    git, the checkpoints stay in DVC's cache), else in ``out``."""
    model = getattr(result, "model", None)
    if model is not None and checkpoints is not None:
        with atomic_dir(checkpoints) as tmp:
            _write_checkpoints(result, tmp)
    with atomic_dir(out) as tmp:
        result.history.to_csv(tmp / "history.csv", index=False)
        result.final.to_csv(tmp / "final.csv", index=False)
        if getattr(result, "measures", None) is not None:  # Fourier progress measures
            result.measures.to_csv(tmp / "measures.csv", index=False)
        write_json(tmp / "config.json", {
            "kind": "network" if model is not None else "linear_teacher",
            "config": dataclasses.asdict(result.config), "seeds": result.seeds,
            "steps_done": result.steps_done})
        if model is not None and checkpoints is None:
            _write_checkpoints(result, tmp)
        if summary is not None:
            write_json(tmp / "summary.json", summary)
        if card is not None:
            write_json(tmp / "card.json", card)


def _write_checkpoints(result: Any, folder: Path) -> None:
    import torch

    from groklab.checkpoint import checkpoint

    for i, seed in enumerate(result.seeds):
        ckpt = checkpoint(result.model, result.config, result.seeds, i, result.steps_done)
        try:
            torch.save(ckpt, folder / f"seed{seed}.pt")
        except RuntimeError as err:  # torch's writer reports ENOSPC, EFBIG so
            code = _full_errno(folder)
            if code is None:
                raise
            raise OSError(code, os.strerror(code), str(folder / f"seed{seed}.pt")) from err
