"""TorchScript of a device's model: the scoring wrapper, optional int8 quantization, trace and freeze.

Used by ``fedinterest export`` (``client/export.py``) and by the recommender's fast path.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from shared_models.model.interest import InterestModel


class ScoringModule(nn.Module):
    """history (1, T) -> scores (1, I), with padding and the window's items masked."""

    def __init__(self, model: InterestModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        scores = self.model.predict(history)  # (1, I)
        return scores.scatter(1, history, torch.finfo(scores.dtype).min)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Int8 Linear layers (dynamic) and 8-bit embeddings (weight-only); a copy, the float model is untouched."""
    from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic

    spec = {nn.Linear: default_dynamic_qconfig, nn.Embedding: float_qparams_weight_only_qconfig}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        return quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)


def script_module(model: InterestModel, *, int8: bool = False) -> torch.jit.ScriptModule:
    """Trace the scoring wrapper on a (1, max_len) input and freeze it for inference."""
    module = ScoringModule(quantize_int8(model) if int8 else model).eval()
    example = torch.zeros((1, model.cfg.max_len), dtype=torch.long)
    example[0, -1] = 1
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript deprecation / tracer notices
        traced = torch.jit.trace(module, example, check_trace=False)
        return torch.jit.freeze(traced.eval())
