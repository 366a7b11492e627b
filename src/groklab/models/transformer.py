"""Decoder-only Transformer of the grokking papers, computing only what the answer needs.

Architecture (as the reference): token + learned position embeddings, post-LayerNorm
blocks ``x = LN(x + Attn(x)); x = LN(x + FFN(x))`` with causal multi-head attention and
a GELU FFN of width 4d, a final LayerNorm and a linear head on the last position.

Two exact shortcuts (``tests/test_models.py`` checks both against the straightforward
model in :mod:`groklab.models.reference`):

* The last block runs its query, attention output and FFN for the last position only;
  earlier positions there only supply keys and values.
* With a causal mask, the first ``prefix_len`` positions (``[a, op]`` of ``[a, op, b, =]``)
  depend only on the first operand. They are computed once per distinct prefix in the
  batch and gathered, so the per-example work covers the remaining positions only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from groklab.models.layers import Embedding, LayerNorm, Linear, as_members, gather_rows


def attend(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Causal multi-head attention of queries at the last ``Tq`` of ``Tk`` positions.

    q: (S, B, Tq, d); k, v: (S, B, Tk, d) -> (S, B, Tq, d). Query i sits at absolute
    position ``Tk - Tq + i`` and sees keys at positions up to its own. With only a few
    positions, broadcasting products beat batched matmuls of 4 x 32 matrices (and the
    fused kernels, tuned for long sequences) by about 2x on a CPU.
    """
    S, B, Tq, d = q.shape
    Tk = k.shape[2]
    hd = d // heads
    scores = (q.view(S, B, Tq, 1, heads, hd) * k.view(S, B, 1, Tk, heads, hd)).sum(-1)
    scores = scores * hd**-0.5  # (S, B, Tq, Tk, heads)
    if Tq > 1:
        visible = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)[..., None]
        scores = scores.masked_fill(~visible, float("-inf"))
    weights = scores.softmax(3).unsqueeze(-1)  # (S, B, Tq, Tk, heads, 1)
    return (weights * v.view(S, B, 1, Tk, heads, hd)).sum(3).reshape(S, B, Tq, d)


class Block(nn.Module):
    """Post-LN decoder block: causal self-attention, then a GELU MLP."""

    def __init__(self, members: int, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = Linear(members, width, 3 * width, init="xavier")
        self.proj = Linear(members, width, width, zero_bias=True)
        self.ln_attn = LayerNorm(members, width)
        self.fc = Linear(members, width, 4 * width)
        self.fc_out = Linear(members, 4 * width, width)
        self.ln_ffn = LayerNorm(members, width)

    def kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of positions ``x`` (S, B, T, d), for later queries."""
        d = x.shape[-1]
        return self.qkv(x, cols=slice(d, 3 * d)).split(d, dim=-1)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None,
                last_only: bool = False, qkv: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Run positions ``x`` (S, B, T, d) that follow the ``past`` keys/values.

        ``qkv``, when given, is ``self.qkv(x)`` computed by the caller (e.g. looked up).
        Returns the block's output (S, B, T or 1, d) and the keys and values of ``x``.
        """
        d = x.shape[-1]
        if qkv is not None:
            q, k, v = qkv.split(d, dim=-1)
            if last_only:
                q, x = q[:, :, -1:], x[:, :, -1:]
        elif last_only:  # keys and values everywhere, the query only where the answer is
            k, v = self.kv(x)
            x = x[:, :, -1:]
            q = self.qkv(x, cols=slice(0, d))
        else:
            q, k, v = self.qkv(x).split(d, dim=-1)
        k_all, v_all = (k, v) if past is None else (torch.cat([past[0], k], 2),
                                                    torch.cat([past[1], v], 2))
        a = self.proj(attend(q, k_all, v_all, self.heads))
        x = self.ln_attn(x + F.dropout(a, self.dropout, self.training))
        h = self.fc_out(F.gelu(self.fc(x)))
        return self.ln_ffn(x + F.dropout(h, self.dropout, self.training)), k, v


class Transformer(nn.Module):
    """int tokens (S, B, T) or (B, T) -> logits (S, B, C) (or (B, C) for one member)."""

    def __init__(self, members: int, vocab_size: int, seq_len: int, n_classes: int, *,
                 layers: int = 2, width: int = 128, heads: int = 4, dropout: float = 0.0,
                 prefix_len: int = 0):
        super().__init__()
        self.members, self.vocab_size, self.seq_len = members, vocab_size, seq_len
        self.prefix_len = prefix_len
        self.tok = Embedding(members, vocab_size, width)
        self.pos = Embedding(members, seq_len, width)
        self.blocks = nn.ModuleList(Block(members, width, heads, dropout) for _ in range(layers))
        self.ln_f = LayerNorm(members, width)
        self.head = Linear(members, width, n_classes)
        self.dropout = dropout
        self.use_prefix = True  # set False to force the per-example path (tests, benchmarks)

    def embed(self, tokens: Tensor, start: int) -> Tensor:
        """Token plus position embeddings of tokens (S, B, T) at positions start.. -> (S,B,T,d)."""
        pos = torch.arange(start, start + tokens.shape[-1], device=tokens.device)
        pos = pos.expand(self.members, -1)
        return self.tok(tokens) + self.pos(pos).unsqueeze(1)

    def forward(self, tokens: Tensor) -> Tensor:
        tokens, squeeze = as_members(tokens, self.members)
        m = self.prefix_len
        shared = self.use_prefix and m > 0 and not (self.training and self.dropout > 0)
        if shared:
            h = self._forward_shared_prefix(tokens, m)
        else:
            h = self.embed(tokens, 0)
            for i, block in enumerate(self.blocks):
                h = block(h, last_only=i == len(self.blocks) - 1)[0]
        logits = self.head(self.ln_f(h[:, :, -1]))  # (S, B, C)
        return logits[0] if squeeze else logits

    def _forward_shared_prefix(self, tokens: Tensor, m: int) -> Tensor:
        S, B, _ = tokens.shape
        # Key each example by its prefix tokens; compute every distinct prefix once.
        key = tokens[..., 0]
        for i in range(1, m):
            key = key * self.vocab_size + tokens[..., i]
        uniq, inverse = torch.unique(key, return_inverse=True)  # inverse: (S, B)
        prefix = torch.stack([(uniq // self.vocab_size ** (m - 1 - i)) % self.vocab_size
                              for i in range(m)], -1)  # (U, m)
        h_pre = self.embed(prefix.expand(S, *prefix.shape), 0)  # (S, U, m, d)
        suffix = tokens[..., m:]
        h = self.embed(suffix, m)  # (S, B, T-m, d)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if i < last:
                h_pre_next, k_pre, v_pre = block(h_pre)
            else:
                k_pre, v_pre = block.kv(h_pre)
            past = (gather_rows(k_pre, inverse), gather_rows(v_pre, inverse))  # (S,B,m,d)
            qkv = self._first_layer_qkv(suffix, m) if i == 0 else None
            h = block(h, past, last_only=i == last, qkv=qkv)[0]
            if i < last:
                h_pre = h_pre_next
        return h

    def _first_layer_qkv(self, suffix: Tensor, m: int) -> Tensor:
        """First-block q, k, v of the suffix tokens (S, B, Ts), by table lookup.

        A first-block projection depends only on the token and its position, so it is
        computed once per (position, vocabulary entry) and gathered: Ts * V rows instead
        of Ts * B.
        """
        S, _, Ts = suffix.shape
        x = self.tok.weight.unsqueeze(1) + self.pos.weight[:, m:, None, :]  # (S, Ts, V, d)
        table = self.blocks[0].qkv(x).flatten(1, 2)  # (S, Ts * V, 3d)
        offsets = torch.arange(Ts, device=suffix.device) * self.vocab_size
        return gather_rows(table, suffix + offsets)  # (S, B, Ts, 3d)
