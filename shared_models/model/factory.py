"""Build a model from the typed config: one place that knows every model kind."""

from __future__ import annotations

import numpy as np
import torch

from shared_models.config import ModelConfig
from shared_models.model.item_text import encode_texts
from shared_models.model.interest import InterestModel
from shared_models.model.popularity import PopularityModel


def uses_text(cfg: ModelConfig) -> bool:
    """Does the model read the frozen item text embeddings (learned projection or content scores)?"""
    return cfg.text_embeddings or cfg.content


def item_text_tensor(cfg: ModelConfig, item_text: list[str] | None) -> torch.Tensor | None:
    """Frozen text embeddings when ``model.text_embeddings`` or ``model.content`` is on (error names the key
    if the dataset has no metadata)."""
    if not uses_text(cfg):
        return None
    if item_text is None:
        key = "model.text_embeddings" if cfg.text_embeddings else "model.content"
        raise ValueError(f"{key} = true but the dataset has no item metadata (.item file)")
    return encode_texts(list(item_text), model_path=cfg.text_model)


def build_model(cfg: ModelConfig, *, num_items: int, train_seqs: list[np.ndarray] | None = None,
                item_text: list[str] | None = None, text: torch.Tensor | None = None):
    """``pop`` -> PopularityModel (needs ``train_seqs``); otherwise an InterestModel."""
    if cfg.kind == "pop":
        if train_seqs is None:
            raise ValueError("model.kind = 'pop' needs the training sequences")
        return PopularityModel(train_seqs, num_items)
    if text is None:
        text = item_text_tensor(cfg, item_text)
    return InterestModel(cfg, num_items, text=text)
