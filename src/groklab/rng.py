"""Independent, reproducible random streams derived from a run's seed.

A seed drives several things (the split, the initial weights, batch sampling and
augmentation, curriculum tie-breaking); each gets its own stream so that changing how
one is consumed never shifts another.
"""

from __future__ import annotations

import numpy as np
import torch

# Append only: a purpose's stream is keyed by its position.
_PURPOSES = ("split", "init", "data", "curriculum", "parity", "train_curve")


def derived_seed(seed: int, purpose: str) -> int:
    """A 32-bit seed for ``purpose`` that is a fixed function of ``seed``."""
    key = _PURPOSES.index(purpose)
    return int(np.random.SeedSequence([seed, key]).generate_state(1)[0])


def generator(seed: int, purpose: str, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(seed, purpose))
