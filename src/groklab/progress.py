"""A progress bar for training: the cell, the update, validation accuracy and an ETA."""

from __future__ import annotations

import sys

from tqdm import tqdm

from groklab.train import Progress


class ProgressBar:
    """Context manager whose :meth:`update` is the ``progress`` callback of ``train``."""

    def __init__(self, label: str, total: int, disable: bool = False):
        self.label, self.total, self.disable = label, total, disable
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

    def __exit__(self, *exc: object) -> None:
        assert self.bar is not None
        self.bar.close()
