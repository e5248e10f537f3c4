"""``fedinterest export``: the device's model (global shared + personal weights) as one TorchScript file.

The file is self-contained: ``torch.jit.load(path)`` needs no fedinterest code. Contract:

- input: ``(1, T)`` int64, the last ``T = model.max_len`` item indices, LEFT-padded with 0, newest last;
- output: ``(1, I)`` float32 scores for every catalogue index; padding and the items in the input window are
  set to the float32 minimum (items seen longer ago than the window must be masked by the caller);
- extra file ``fedinterest.json``: ``max_len``, ``num_items``, ``int8``, ``item_ids`` and ``titles`` (index ->
  token/title), so an app can map indices back to items.

``--int8`` applies dynamic int8 quantization to every ``nn.Linear`` (weights int8, activations quantized on
the fly: the Transformer, the short-term pooling, the gate and the catalogue scorer) and weight-only 8-bit
quantization (per-row scale and offset) to the item and position embeddings. Quantizing the embedding too
matters: the scorer is tied to the item table, so an int8 scorer next to an fp32 table would make the file
LARGER than fp32 for big catalogues. The GRU stays fp32.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from client.recommend import load_device_model
from client.runtime import DeviceState
from client.torchscript import script_module

META_FILE = "fedinterest.json"


def export_model(state_dir: Path | str, out: Path | str, *, int8: bool = False) -> Path:
    """Write the device's TorchScript model to ``out``; returns the path."""
    state = DeviceState(state_dir)
    model, source = load_device_model(state)
    cat = state.catalogue()
    scripted = script_module(model, int8=int8)
    meta = {"max_len": model.cfg.max_len, "num_items": cat.num_items, "int8": int8, "global_weights": source,
            "item_ids": cat.item_ids, "titles": cat.titles}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.save: still the portable format
        torch.jit.save(scripted, str(tmp), _extra_files={META_FILE: json.dumps(meta)})
    tmp.replace(out)
    return out


def load_exported(path: Path | str) -> tuple[torch.jit.ScriptModule, dict]:
    """(module, metadata) of an exported file."""
    extra = {META_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), _extra_files=extra)
    return module, json.loads(extra[META_FILE])
