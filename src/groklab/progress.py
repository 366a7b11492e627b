"""A progress bar for training: the cell, the update, validation accuracy and an ETA."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm import tqdm

from groklab.train import Progress


class ProgressBar:
    """Context manager whose :meth:`update` is the ``progress`` callback of ``train``."""

    def __init__(self, label: str, total: int, disable: bool = False,
                 on_update: Callable[[], object] | None = None):
        self.label, self.total, self.disable = label, total, disable
        self.on_update = on_update  # e.g. CpuShare.rebalance, as other trainers come and go
        self.bar: tqdm | None = None

    def __enter__(self) -> ProgressBar:
        self.bar = tqdm(total=self.total, desc=self.label, unit="upd", file=sys.stderr,
                        disable=self.disable, dynamic_ncols=True, mininterval=1.0)
        return self

    def update(self, p: Progress) -> None:
        assert self.bar is not None
        self.bar.update(p.step - self.bar.n)
        accs = " ".join(f"{a:.3f}" for a in p.val_acc)
        self.bar.set_postfix_str(f"val_acc {accs}", refresh=False)
        if self.on_update is not None:
            self.on_update()

    def __exit__(self, *exc: object) -> None:
        assert self.bar is not None
        self.bar.close()
