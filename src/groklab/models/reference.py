"""The straightforward Transformer, written as the reference implementation wrote it.

``nn.MultiheadAttention`` on (T, B, d) activations, every position through every layer,
logits for all positions of which only the last is used. It is the oracle the fast
:class:`groklab.models.transformer.Transformer` is tested against, and the baseline of
``benchmarks/train_speed.py``; nothing trains with it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from groklab.models.transformer import Transformer


class DecoderBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads)
        self.self_attn_norm = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))
        self.ffn_norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:  # x: (T, B, d)
        mask = torch.full((len(x), len(x)), -float("inf"), device=x.device).triu(1)
        a, _ = self.self_attn(x, x, x, attn_mask=mask)
        x = self.self_attn_norm(x + a)
        return self.ffn_norm(x + self.ffn(x))


class ReferenceTransformer(nn.Module):
    """tokens (B, T) -> logits (B, C), computing logits at every position."""

    def __init__(self, vocab_size: int, seq_len: int, n_classes: int, *, layers: int = 2,
                 width: int = 128, heads: int = 4):
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab_size, width)
        self.position_embeddings = nn.Embedding(seq_len, width)
        self.model = nn.Sequential(*[DecoderBlock(width, heads) for _ in range(layers)],
                                   nn.LayerNorm(width), nn.Linear(width, n_classes))

    def forward(self, tokens: Tensor) -> Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.token_embeddings(tokens) + self.position_embeddings(positions)
        return self.model(h.transpose(0, 1))[-1]  # all positions computed, last one kept

    @torch.no_grad()
    def copy_from(self, fast: Transformer, member: int = 0) -> ReferenceTransformer:
        """Load member ``member`` of a fast Transformer's weights into this model."""
        s = member
        self.token_embeddings.weight.copy_(fast.tok.weight[s])
        self.position_embeddings.weight.copy_(fast.pos.weight[s])
        for ref, blk in zip(self.model[:-2], fast.blocks, strict=True):
            ref.self_attn.in_proj_weight.copy_(blk.qkv.weight[s].T)
            ref.self_attn.in_proj_bias.copy_(blk.qkv.bias[s, 0])
            ref.self_attn.out_proj.weight.copy_(blk.proj.weight[s].T)
            ref.self_attn.out_proj.bias.copy_(blk.proj.bias[s, 0])
            for ref_ln, ln in ((ref.self_attn_norm, blk.ln_attn), (ref.ffn_norm, blk.ln_ffn)):
                ref_ln.weight.copy_(ln.weight[s])
                ref_ln.bias.copy_(ln.bias[s])
            for ref_lin, lin in ((ref.ffn[0], blk.fc), (ref.ffn[2], blk.fc_out)):
                ref_lin.weight.copy_(lin.weight[s].T)
                ref_lin.bias.copy_(lin.bias[s, 0])
        self.model[-2].weight.copy_(fast.ln_f.weight[s])
        self.model[-2].bias.copy_(fast.ln_f.bias[s])
        self.model[-1].weight.copy_(fast.head.weight[s].T)
        self.model[-1].bias.copy_(fast.head.bias[s, 0])
        return self
