"""Models with one interface: int tokens (B, T) or (S, B, T) in, logits out.

Every model holds ``members`` independent copies (one per seed) trained side by side;
see :mod:`groklab.models.layers`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from groklab import rng
from groklab.config import ModelConfig
from groklab.models.layers import init_members
from groklab.models.lstm import LSTM
from groklab.models.mlp import MLP, BitMLP
from groklab.models.one_layer import OneLayerTransformer
from groklab.models.transformer import Transformer
from groklab.tasks import Task

__all__ = ["BUILDERS", "build_model", "Transformer", "MLP", "BitMLP", "LSTM",
           "OneLayerTransformer"]


def _transformer(n: int, cfg: ModelConfig, task: Task) -> nn.Module:
    return Transformer(n, task.vocab_size, task.seq_len, task.n_classes, layers=cfg.layers,
                       width=cfg.width, heads=cfg.heads, dropout=cfg.dropout,
                       prefix_len=task.prefix_len)


def _mlp(n: int, cfg: ModelConfig, task: Task) -> nn.Module:
    return MLP(n, task.vocab_size, task.seq_len, task.n_classes, width=cfg.width,
               hidden=cfg.mlp_hidden, layers=cfg.mlp_layers, dropout=cfg.dropout)


def _lstm(n: int, cfg: ModelConfig, task: Task) -> nn.Module:
    return LSTM(n, task.vocab_size, task.n_classes, width=cfg.width, hidden=cfg.lstm_hidden)


def _bit_mlp(n: int, cfg: ModelConfig, task: Task) -> nn.Module:
    return BitMLP(n, task.seq_len, task.n_classes, hidden=cfg.bit_mlp_hidden,
                  dropout=cfg.dropout)


def _transformer1(n: int, cfg: ModelConfig, task: Task) -> nn.Module:
    return OneLayerTransformer(n, task.vocab_size, task.seq_len, task.n_classes,
                               width=cfg.width, heads=cfg.heads, mlp=cfg.mlp_hidden)


# How each architecture `model.arch` can name (config.ARCHITECTURES) is built for a task.
BUILDERS: dict[str, Callable[[int, ModelConfig, Task], nn.Module]] = {
    "transformer": _transformer, "mlp": _mlp, "lstm": _lstm, "bit_mlp": _bit_mlp,
    "transformer1": _transformer1,
}


def build_model(cfg: ModelConfig, task: Task, seeds: list[int]) -> nn.Module:
    """The architecture ``cfg.arch`` sized for ``task``, one member per seed.

    Member ``s`` is initialised from the seed's own "init" stream, so the same seed gives
    the same initial weights alone or in an ensemble.
    """
    model = BUILDERS[cfg.arch](len(seeds), cfg, task)  # ModelConfig checked the name
    init_members(model, [rng.generator(s, "init") for s in seeds])
    return model
