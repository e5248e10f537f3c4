"""On-device recommendation: global shared weights + personal weights, full-catalogue top-K of unseen items.

The model is loaded once (:class:`Recommender`); every ``recommend()`` re-reads the interaction store and
re-encodes the history, so a new interaction changes the next recommendation at once (no retraining).
Global weights come from ``global_shared.npz`` (plaintext run), else ``global_sum.ckks`` decrypted with the
device's keys (server-blind run), else the initial shared model every party derives from the seed.
Recommending needs no privacy budget: it reads the model and the device's own data, and sends nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from client.device import load_weights, personalize
from client.runtime import (GLOBAL_CKKS, GLOBAL_NPZ, PRIOR_CKKS, PRIOR_NPZ, Catalogue, DeviceState, DeviceStateError,
                            device_text)
from client.torchscript import script_module
from shared_models.config import Config
from shared_models.model.interest import InterestModel
from shared_models.model.state import build_device_model, initial_shared, stable_hash
from shared_models.train.sequences import PAD, left_pad


@dataclass(frozen=True)
class Recommendation:
    item: str
    title: str
    score: float


@dataclass
class Explanation:
    """Why: the gate's long- vs short-term share and the history items each part attended to."""

    long_share: float
    short_share: float
    long_items: list[tuple[str, str, float]] = field(default_factory=list)  # (item, title, attention weight)
    short_items: list[tuple[str, str, float]] = field(default_factory=list)
    note: str = ""


@dataclass
class Result:
    items: list[Recommendation]
    source: str  # where the global weights came from (or "popularity")
    explanation: Explanation | None = None


def global_shared(state: DeviceState, cfg: Config, num_items: int, text: torch.Tensor | None
                  ) -> tuple[dict[str, np.ndarray], str]:
    """(global shared weights, source file name or "initial")."""
    npz = state.root / GLOBAL_NPZ
    if npz.is_file():
        with np.load(npz) as z:
            return {k: z[k] for k in z.files}, GLOBAL_NPZ
    template = initial_shared(cfg, num_items, text)
    ckks = state.root / GLOBAL_CKKS
    if not ckks.is_file():
        return template, "initial"
    if not (state.keys_dir / "manifest.json").is_file():
        raise DeviceStateError(f"{ckks}: an encrypted global model needs this device's keys in {state.keys_dir}")
    from client.secure import device_keys, global_model
    from client.user_dp import user_level_decoding

    weights, _, _ = global_model(ckks.read_bytes(), device_keys(str(state.keys_dir), state.user_id), template,
                                 **user_level_decoding(cfg))
    return weights, GLOBAL_CKKS


def fast_inference(model: InterestModel) -> InterestModel:
    """An eval-mode copy whose short-term GRU is torch's fused nn.GRU (same weights, same maths as DPGRU)."""
    fast = copy.deepcopy(model).eval()
    short = getattr(fast, "short", None)
    if short is not None and not isinstance(short.gru, nn.GRU):
        d = short.gru.hidden_size
        gru = nn.GRU(d, d, batch_first=True)
        gru.load_state_dict(short.gru.state_dict())
        short.gru = gru.eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast


def load_device_model(state: DeviceState) -> tuple[InterestModel, str]:
    """(eval-mode model with global + personal weights, source of the global weights)."""
    cfg, cat = state.config(), state.catalogue()
    text = device_text(cfg, cat)
    shared, source = global_shared(state, cfg, cat.num_items, text)
    model = build_device_model(cfg, cat.num_items, text, state.user_id)
    load_weights(model, shared, state.store())
    prior = stored_prior(state)
    model.set_item_prior(None if prior is None else cfg.model.prior_weight * torch.as_tensor(prior))
    personalize(model, state.history_indices(), cfg=cfg, seed=stable_hash(state.user_id))  # eval.personalize_epochs
    return fast_inference(model), source


def stored_prior(state: DeviceState) -> np.ndarray | None:
    """The output bias from the popularity prior the device last received, if its run released one."""
    from client import prior  # tenseal: only when a prior is stored

    if (state.root / PRIOR_NPZ).is_file():
        with np.load(state.root / PRIOR_NPZ) as z:
            return prior.decode({k: z[k] for k in z.files}, keys_dir=str(state.keys_dir), device_id=state.user_id)
    if (state.root / PRIOR_CKKS).is_file():
        return prior.decode((state.root / PRIOR_CKKS).read_bytes(), keys_dir=str(state.keys_dir),
                            device_id=state.user_id)
    return None


class Recommender:
    """A device's loaded model; ``recommend`` reads the current history every call."""

    def __init__(self, state_dir: Path | str) -> None:
        self.state = DeviceState(state_dir)
        self.cfg, self.catalogue = self.state.config(), self.state.catalogue()
        self.model, self.source = load_device_model(self.state)
        self._db = self.state.interactions()  # kept open: each read sees the latest committed interactions
        self._scripted: torch.jit.ScriptModule | None = None  # frozen TorchScript of the same model (fast path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def history(self) -> np.ndarray:
        """The current stored history as item indices, oldest first."""
        return self.catalogue.to_indices(self._db.history(), where=str(self._db.path))

    @torch.inference_mode()
    def recommend(self, k: int = 10, *, explain: bool = False, top_reasons: int = 5) -> Result:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        history = self.history()
        if len(history) == 0:
            return self._popular(k, explain)
        inputs = torch.from_numpy(left_pad(history, self.cfg.model.max_len)).unsqueeze(0)  # (1, T)
        if not explain:
            return Result(self._top(self._scripted_scores(inputs), history, k), self.source)
        probe = _AttentionProbe(self.model)
        try:
            enc = self.model.encode(inputs)
        finally:
            probe.remove()
        scores = self.model.score(enc["user"][:, -1])[0]  # (I,)
        return Result(self._top(scores, history, k), self.source,
                      _explain(enc, probe, inputs[0], self.catalogue, top_reasons))

    def _scripted_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        if self._scripted is None:
            self._scripted = script_module(self.model)  # the exported module: same maths, no Python overhead
        return self._scripted(inputs)[0]

    def _top(self, scores: torch.Tensor, history: np.ndarray, k: int) -> list[Recommendation]:
        scores = scores.clone()
        scores[torch.from_numpy(np.append(history, PAD))] = -torch.inf
        k = min(k, int(torch.isfinite(scores).sum()))
        vals, idx = torch.topk(scores, k)
        cat = self.catalogue
        return [Recommendation(cat.item_ids[i], cat.title(i), float(v)) for v, i in zip(vals.tolist(), idx.tolist())]

    def _popular(self, k: int, explain: bool) -> Result:
        pop = self.catalogue.popularity
        if not pop:
            raise DeviceStateError(f"{self.state.root}: the history is empty and the catalogue has no popularity "
                                   "counts; add an interaction first (`fedinterest device add`)")
        items = self._top(torch.tensor(pop, dtype=torch.float64), np.zeros(0, np.int64), k)
        note = "empty history: most popular items of the catalogue"
        return Result(items, "popularity", Explanation(0.0, 0.0, note=note) if explain else None)


class _AttentionProbe:
    """Forward hooks capturing q/k of the long-term last layer and of the short-term pooling."""

    def __init__(self, model: InterestModel) -> None:
        self.out: dict[str, torch.Tensor] = {}
        self.heads = model.cfg.num_heads
        self.short_len = model.cfg.short_len
        self._hooks = []
        if hasattr(model, "long"):
            self._hooks.append(model.long.blocks[-1].attn.qkv.register_forward_hook(self._save("qkv")))
        if hasattr(model, "short"):
            self._hooks.append(model.short.query.register_forward_hook(self._save("sq")))
            self._hooks.append(model.short.key.register_forward_hook(self._save("sk")))

    def _save(self, name: str):
        def hook(_module: nn.Module, _args: object, output: torch.Tensor) -> None:
            self.out[name] = output.detach()
        return hook

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()

    def long_weights(self, allowed: torch.Tensor, *, per_head: bool = False) -> torch.Tensor | None:
        """(T,) head-averaged ((H, T) per head) attention of the last query in the last Transformer layer."""
        if "qkv" not in self.out:
            return None
        qkv = self.out["qkv"][0]  # (T, 3D)
        d = qkv.shape[-1] // 3
        q, k = qkv[-1, :d].view(self.heads, -1), qkv[:, d:2 * d].view(-1, self.heads, d // self.heads)
        att = torch.einsum("hc,thc->ht", q, k) / (d // self.heads) ** 0.5  # (H, T)
        att = att.masked_fill(~allowed, -torch.inf).softmax(-1)
        return att if per_head else att.mean(0)

    def short_weights(self, allowed: torch.Tensor) -> torch.Tensor | None:
        """(T,) attention-pooling weights of the last position over its last ``short_len`` GRU states."""
        if "sq" not in self.out:
            return None
        q, k = self.out["sq"][0, -1], self.out["sk"][0]  # (D,), (T, D)
        window = torch.arange(k.shape[0]) >= k.shape[0] - self.short_len
        att = (k @ q) / k.shape[-1] ** 0.5
        return att.masked_fill(~(allowed & window), -torch.inf).softmax(-1)


def _explain(enc: dict[str, torch.Tensor], probe: _AttentionProbe, window: torch.Tensor, cat: Catalogue,
             top: int) -> Explanation:
    allowed = window != PAD
    allowed[-1] = True  # the last position always attends to itself (as in causal_mask)
    if "gate" in enc:
        long_share = float(enc["gate"][0, -1].mean())
    else:
        long_share = 1.0 if "long" in enc else 0.0
    return Explanation(long_share, 1.0 - long_share,
                       _top_items(probe.long_weights(allowed), window, cat, top),
                       _top_items(probe.short_weights(allowed), window, cat, top))


def _top_items(weights: torch.Tensor | None, window: torch.Tensor, cat: Catalogue,
               top: int) -> list[tuple[str, str, float]]:
    if weights is None:
        return []
    per_item: dict[int, float] = {}
    for idx, w in zip(window.tolist(), weights.tolist()):
        if idx != PAD and w > 0:
            per_item[idx] = per_item.get(idx, 0.0) + w
    ranked = sorted(per_item.items(), key=lambda kv: -kv[1])[:top]
    return [(cat.item_ids[i], cat.title(i), w) for i, w in ranked]
