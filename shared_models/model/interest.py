"""The long/short-term interest model: item tower, two encoders, gated fusion, and the model contract.

Contract (RecBole-style, so models are interchangeable):
- ``calculate_loss(batch) -> Tensor``: batch has ``inputs`` and ``targets``, both (B, T) item indices,
  0 = padding / ignored. Full softmax cross-entropy over all items at every position. An optional
  ``columns`` (C,) lists the only positions that carry targets; the others are then not scored at all (the
  same loss, less work: overlapping windows carry a few targets each).
- ``full_sort_predict(batch) -> Tensor``: batch has ``inputs`` (B, T) (left-padded history); returns (B, I)
  scores for the whole catalogue, from the last position. Masking seen items is the evaluator's job.
- ``shared_state()`` / ``personal_state()``: the federated split. SHARED (learned by all devices together):
  item embeddings, text projections, the long-term Transformer. PERSONAL (never leaves a device): the
  short-term encoder and the fusion gate.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from shared_models.config import ModelConfig
from shared_models.model.content import ContentScorer
from shared_models.model.encoders import LongTermEncoder, ShortTermEncoder
from shared_models.train.sequences import PAD

SHARED_PREFIXES = ("item_emb.", "scorer.", "text_in.", "text_out.", "emb_ln.", "long.", "content.", "neural_scale.")
PERSONAL_PREFIXES = ("short.", "gate.")


class FusionGate(nn.Module):
    """g = sigmoid(W [l; s; l*s]); u = g * l + (1 - g) * s."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.w = nn.Linear(3 * hidden, hidden)

    def forward(self, long: torch.Tensor, short: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.sigmoid(self.w(torch.cat([long, short, long * short], dim=-1)))  # (B, T, D)
        return g * long + (1 - g) * short, g


class InterestModel(nn.Module):
    """Long-term, short-term or gated long-short sequential recommender (``cfg.kind``).

    Item vectors: e_i = E[i] (+ P_in t_i with frozen text embeddings t_i; only P_in t_i when ``item_ids`` is
    false, so nothing item-specific is learned from users). The ID table is tied between the
    input lookup (nn.Embedding) and output scoring (an nn.Linear sharing the same Parameter), so Opacus'
    per-sample gradient hooks see both uses. With text, scoring adds (P_out u) . t_i for every item.
    """

    def __init__(self, cfg: ModelConfig, num_items: int, text: torch.Tensor | None = None) -> None:
        super().__init__()
        if cfg.kind not in ("long", "short", "long-short"):
            raise ValueError(f"model.kind {cfg.kind!r} is not a neural model (pop has its own class)")
        self.cfg, self.num_items = cfg, num_items
        D = cfg.hidden
        if cfg.item_ids:
            self.item_emb = nn.Embedding(num_items, D, padding_idx=PAD)
            self.scorer = nn.Linear(D, num_items, bias=False)
            self.scorer.weight = self.item_emb.weight  # tied: (I, D)
        elif text is None or not cfg.text_embeddings:
            raise ValueError("model.item_ids = false needs text embeddings (model.text_embeddings = true)")
        if (cfg.text_embeddings or cfg.content) and text is None:
            raise ValueError("model.text_embeddings / model.content need the frozen item text embeddings")
        if text is not None and text.shape[0] != num_items:
            raise ValueError(f"text embeddings have {text.shape[0]} rows, catalogue has {num_items}")
        if cfg.text_embeddings:
            self.register_buffer("text", text.float(), persistent=False)  # (I, E), frozen
            self.text_in = nn.Linear(text.shape[1], D)
            self.text_out = nn.Linear(D, text.shape[1], bias=False)
        else:
            self.text = None
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.emb_ln = nn.LayerNorm(D)
        if cfg.kind in ("long", "long-short"):
            self.long = LongTermEncoder(hidden=D, max_len=cfg.max_len, num_layers=cfg.num_layers,
                                        num_heads=cfg.num_heads, inner=cfg.inner, dropout=cfg.dropout)
        if cfg.kind in ("short", "long-short"):
            self.short = ShortTermEncoder(hidden=D, short_len=cfg.short_len, dropout=cfg.dropout,
                                          strict=cfg.strict_short)
        if cfg.kind == "long-short":
            self.gate = FusionGate(D)
        self.register_buffer("item_prior", None, persistent=False)  # (I,) output bias, e.g. the DP popularity prior
        self.apply(self._init)
        self.neural_scale = None  # learned trust in the neural logits of the fused user vector (model.neural_gate)
        if cfg.neural_gate:
            self.neural_scale = nn.Linear(1, 1, bias=False)  # a Linear so Opacus' per-sample hooks cover it
            with torch.no_grad():
                self.neural_scale.weight.fill_(cfg.neural_gate_init)
        self.content = (ContentScorer(text=text, horizons=cfg.content_horizons, init_weight=cfg.content_weight)
                        if cfg.content else None)  # built after _init: its weights start at content_weight

    def set_item_prior(self, prior: torch.Tensor | None) -> None:
        """A fixed (I,) bias added to every score (not a parameter: it never trains and never leaves)."""
        if prior is not None and tuple(prior.shape) != (self.num_items,):
            raise ValueError(f"item prior has shape {tuple(prior.shape)}, the catalogue has {self.num_items} items")
        self.item_prior = None if prior is None else prior.float().to(self._device())

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)) and m is not getattr(self, "scorer", None):
            nn.init.normal_(m.weight, std=self.cfg.init_std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()

    # -- encoding -------------------------------------------------------------------------------------
    def embed(self, items: torch.Tensor) -> torch.Tensor:
        x = self.item_emb(items) if self.cfg.item_ids else 0.0  # (B, T, D)
        if self.text is not None:
            x = x + self.text_in(self.text[items])  # (B, T, D)
        # zero padded positions explicitly: nn.Embedding's padding_idx is not honoured by per-sample grads
        return self.emb_drop(self.emb_ln(x)) * (items != PAD).unsqueeze(-1)

    def encode(self, items: torch.Tensor, cols: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """User vectors (B, C, D) at positions ``cols`` ((C,) indices; every position when None): keys
        ``user`` and (long-short) ``long``, ``short``, ``gate``."""
        pad = items == PAD  # (B, T)
        emb = self.embed(items)
        out: dict[str, torch.Tensor] = {}
        if self.cfg.kind in ("long", "long-short"):
            long = self.long(emb, pad)  # (B, T, D): every position is a key of the later ones
            out["long"] = long if cols is None else long[:, cols]
        if self.cfg.kind in ("short", "long-short"):
            out["short"] = self.short(emb, pad, cols)
        if self.cfg.kind == "long-short":
            out["user"], out["gate"] = self.gate(out["long"], out["short"])
        else:
            out["user"] = out["long"] if self.cfg.kind == "long" else out["short"]
        return out

    def score(self, user: torch.Tensor, content: torch.Tensor | None = None, *, fused: bool = True) -> torch.Tensor:
        """(..., D) -> (..., I) scores over the whole catalogue (+ ``content`` (..., I)); padding gets -inf-like.

        With ``model.neural_gate`` the neural logits of the fused user vector (``fused``) are scaled by a
        learned scalar before the prior and content scores are added; the auxiliary long/short heads are not."""
        logits = self.scorer(user) if self.cfg.item_ids else 0.0  # (..., I)
        if self.text is not None:
            logits = logits + self.text_out(user) @ self.text.T  # (..., I)
        if fused and self.neural_scale is not None:
            logits = self.neural_scale(logits.unsqueeze(-1)).squeeze(-1)  # (..., I)
        if content is not None:
            logits = logits + content  # (..., I)
        if self.item_prior is not None:
            logits = logits + self.item_prior  # (..., I)
        is_pad = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        is_pad[PAD] = True
        return logits.masked_fill(is_pad, torch.finfo(logits.dtype).min)  # out of place: Opacus hooks

    # -- contract -------------------------------------------------------------------------------------
    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        targets, cols = batch["targets"], batch.get("columns")
        if cols is not None:
            targets = targets[:, cols]  # (B, C)
        enc = self.encode(batch["inputs"], cols)
        content = self.content(batch["inputs"], cols) if self.content is not None else None  # (B, C, I)
        loss = self._ce(enc["user"], targets, content)
        if self.cfg.kind == "long-short" and self.cfg.aux_weight > 0:
            loss = loss + self.cfg.aux_weight * (self._ce(enc["long"], targets, content, fused=False)
                                                 + self._ce(enc["short"], targets, content, fused=False))
        return loss

    def _ce(self, user: torch.Tensor, targets: torch.Tensor, content: torch.Tensor | None, *,
            fused: bool = True) -> torch.Tensor:
        """Mean over samples of each sample's mean next-item CE: separable per sample, as DP-SGD needs."""
        logits = self.score(user, content, fused=fused)  # (B, T, I)
        tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD,
                              reduction="none").view_as(targets)  # (B, T)
        valid = (targets != PAD).sum(dim=1).clamp(min=1)  # (B,)
        return (tok.sum(dim=1) / valid).mean()

    @torch.no_grad()
    def full_sort_predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.predict(batch["inputs"])

    def predict(self, items: torch.Tensor) -> torch.Tensor:
        """(B, T) left-padded histories -> (B, I) scores from the last position (traceable)."""
        last = torch.tensor([items.shape[1] - 1], device=items.device)
        content = self.content.last(items) if self.content is not None else None  # (B, I)
        return self.score(self.encode(items, last)["user"][:, -1], content)  # (B, I)

    # -- federated split ------------------------------------------------------------------------------
    def shared_state(self) -> "OrderedDict[str, torch.Tensor]":
        return _select(self, SHARED_PREFIXES)

    def personal_state(self) -> "OrderedDict[str, torch.Tensor]":
        return _select(self, PERSONAL_PREFIXES)

    def load_shared_state(self, state: dict[str, torch.Tensor]) -> None:
        _load_exact(self, state, self.shared_state().keys(), "shared")

    def load_personal_state(self, state: dict[str, torch.Tensor]) -> None:
        _load_exact(self, state, self.personal_state().keys(), "personal")


def _select(model: nn.Module, prefixes: tuple[str, ...]) -> "OrderedDict[str, torch.Tensor]":
    """Parameters whose name starts with one of ``prefixes`` (named_parameters drops tied/aliased duplicates,
    e.g. ``scorer.weight`` is ``item_emb.weight``)."""
    return OrderedDict((k, v.detach()) for k, v in model.named_parameters() if k.startswith(prefixes))


def _load_exact(model: nn.Module, state: dict[str, torch.Tensor], expected, part: str) -> None:
    expected = list(expected)
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        raise KeyError(f"{part} state mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k in expected:
            if params[k].shape != state[k].shape:
                raise ValueError(f"{part} state '{k}': shape {tuple(state[k].shape)} != {tuple(params[k].shape)}")
            params[k].copy_(torch.as_tensor(state[k]))
