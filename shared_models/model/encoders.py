"""Sequence encoders: the long-term causal Transformer and the short-term GRU with local attention pooling.

Both are built only from layers that Opacus computes per-sample gradients for (``nn.Linear``,
``nn.LayerNorm``, ``nn.Embedding``, ``opacus.layers.DPGRU``): attention is written out from ``nn.Linear``
rather than ``nn.MultiheadAttention``. Shapes: B batch, T positions, D hidden, H heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from opacus.layers import DPGRU
from torch import nn

NEG_INF = -1e9  # additive mask value (finite so fully masked rows stay NaN-free)


def causal_mask(pad: torch.Tensor, *, window: int | None = None) -> torch.Tensor:
    """(B, 1, T, T) bool: query t may attend key s iff s <= t, key s is not padding, and (if ``window``)
    t - s < window. The diagonal is always allowed so padded queries stay finite (their loss is ignored)."""
    T = pad.shape[1]
    idx = torch.arange(T, device=pad.device)
    allowed = idx[None, :] <= idx[:, None]  # (T, T) [t, s]
    if window is not None:
        allowed = allowed & (idx[:, None] - idx[None, :] < window)
    allowed = allowed[None, None] & ~pad[:, None, None, :]  # (B, 1, T, T)
    return allowed | torch.eye(T, dtype=torch.bool, device=pad.device)[None, None]


class SelfAttention(nn.Module):
    """Multi-head self-attention from nn.Linear (Opacus-friendly)."""

    def __init__(self, hidden: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.h = num_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)  # each (B, T, D)
        q, k, v = (z.view(B, T, self.h, D // self.h).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D/H)
        att = q @ k.transpose(-2, -1) / math.sqrt(D // self.h)  # (B, H, T, T)
        att = att.masked_fill(~allowed, NEG_INF).softmax(dim=-1)
        y = self.drop(att) @ v  # (B, H, T, D/H)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class Block(nn.Module):
    """Pre-norm Transformer block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, hidden: int, num_heads: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, num_heads, dropout)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, inner)
        self.fc2 = nn.Linear(inner, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), allowed))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))  # (B, T, D)


class LongTermEncoder(nn.Module):
    """Causal Transformer over the last T items with learnable positions (SASRec-style)."""

    def __init__(self, *, hidden: int, max_len: int, num_layers: int, num_heads: int, inner: int,
                 dropout: float) -> None:
        super().__init__()
        self.pos = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, num_heads, inner, dropout) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(hidden)

    def forward(self, emb: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        B, T, _ = emb.shape
        positions = torch.arange(T, device=emb.device).expand(B, T)  # (B, T); T-1 = most recent
        x = self.drop(emb + self.pos(positions))
        allowed = causal_mask(pad)
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln_f(x)  # (B, T, D)


class ShortTermEncoder(nn.Module):
    """A GRU, then attention pooling at each position over its last ``short_len`` GRU states.

    The output at position t depends only on items at positions <= t (causal). Two horizons:

    - ``strict = False``: one GRU runs over the whole input and only the pooling is limited to the last
      ``short_len`` states (each state still carries everything before it).
    - ``strict = True``: position t reads ONLY the items at t - short_len + 1 .. t (a GRU restarted on that
      window), so an item further back cannot change it; the long-term encoder owns the rest of the history.
      Its samples mix positions in one batch, so it does not support Opacus' per-sample gradients.
    """

    def __init__(self, *, hidden: int, short_len: int, dropout: float, strict: bool = False) -> None:
        super().__init__()
        self.short_len, self.strict = short_len, strict
        self.gru = DPGRU(hidden, hidden, batch_first=True)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.ln = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, emb: torch.Tensor, pad: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, C, D) at positions ``cols`` ((C,) indices; all T positions when None)."""
        if self.strict:
            return self._windowed(emb, pad, torch.arange(emb.shape[1], device=emb.device) if cols is None else cols)
        states, _ = self.gru(self.drop(emb))  # (B, T, D)
        q = self.query(states)  # (B, T, D): the latest state asks which recent items matter
        k = self.key(states)  # (B, T, D)
        att = q @ k.transpose(-2, -1) / math.sqrt(states.shape[-1])  # (B, T, T)
        allowed = causal_mask(pad, window=self.short_len)[:, 0]  # (B, T, T)
        att = att.masked_fill(~allowed, NEG_INF).softmax(dim=-1)
        out = self.ln(att @ states)  # (B, T, D)
        return out if cols is None else out[:, cols]

    def _windowed(self, emb: torch.Tensor, pad: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        B, _, D = emb.shape
        k, C = self.short_len, cols.shape[0]
        idx = cols[:, None] + torch.arange(1 - k, 1, device=emb.device)  # (C, k): window of each position
        outside = idx < 0
        idx = idx.clamp(min=0)
        wpad = pad[:, idx] | outside  # (B, C, k)
        win = (emb[:, idx] * ~wpad.unsqueeze(-1)).reshape(B * C, k, D)  # (B*C, k, D), padding zeroed
        states, _ = self.gru(self.drop(win))  # (B*C, k, D)
        q = self.query(states[:, -1:])  # (B*C, 1, D): the window's latest state asks
        att = q @ self.key(states).transpose(-2, -1) / math.sqrt(D)  # (B*C, 1, k)
        allowed = ~wpad.reshape(B * C, 1, k)
        allowed[..., -1] = True  # the position itself, so padded queries stay finite
        att = att.masked_fill(~allowed, NEG_INF).softmax(dim=-1)
        return self.ln((att @ states)[:, 0]).view(B, C, D)  # (B, C, D)
