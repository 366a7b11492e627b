"""Models with one interface: int tokens (B, T) or (S, B, T) in, logits out.

Every model holds ``members`` independent copies (one per seed) trained side by side;
see :mod:`groklab.models.layers`.
"""

from __future__ import annotations

from torch import nn

from groklab import rng
from groklab.config import ModelConfig
from groklab.models.layers import init_members
from groklab.models.lstm import LSTM
from groklab.models.mlp import MLP, BitMLP
from groklab.models.transformer import Transformer
from groklab.tasks import Task

__all__ = ["build_model", "Transformer", "MLP", "BitMLP", "LSTM"]


def build_model(cfg: ModelConfig, task: Task, seeds: list[int]) -> nn.Module:
    """The architecture ``cfg.arch`` sized for ``task``, one member per seed.

    Member ``s`` is initialised from the seed's own "init" stream, so the same seed gives
    the same initial weights alone or in an ensemble.
    """
    n = len(seeds)
    if cfg.arch == "transformer":
        model = Transformer(n, task.vocab_size, task.seq_len, task.n_classes, layers=cfg.layers,
                            width=cfg.width, heads=cfg.heads, dropout=cfg.dropout,
                            prefix_len=task.prefix_len)
    elif cfg.arch == "mlp":
        model = MLP(n, task.vocab_size, task.seq_len, task.n_classes, width=cfg.width,
                    hidden=cfg.mlp_hidden, layers=cfg.mlp_layers, dropout=cfg.dropout)
    elif cfg.arch == "lstm":
        model = LSTM(n, task.vocab_size, task.n_classes, width=cfg.width, hidden=cfg.lstm_hidden)
    elif cfg.arch == "bit_mlp":
        model = BitMLP(n, task.seq_len, task.n_classes, hidden=cfg.bit_mlp_hidden,
                       dropout=cfg.dropout)
    else:  # ModelConfig validated the name
        raise AssertionError(cfg.arch)
    init_members(model, [rng.generator(s, "init") for s in seeds])
    return model
