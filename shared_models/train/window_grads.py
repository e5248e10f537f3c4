"""Per-window gradients of the shared parameters with Opacus' per-sample machinery, clipped and summed.

The device side of window-level distributed DP-SGD (``shared_models/privacy/window_level.py``): one forward
and backward pass over the sampled windows through an Opacus ``GradSampleModule`` gives every window's own
gradient (``param.grad_sample``, batch-first); each window's gradient over the shared parameters is clipped
to L2 norm ``clip`` and the clipped gradients are summed. The model's loss is a mean over samples of each
sample's own mean loss (``InterestModel._ce``), so with ``loss_reduction="mean"`` a window's per-sample
gradient depends on that window alone. No optimizer step is taken: the model is left as it was.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from opacus import GradSampleModule

from shared_models.privacy.window_level import clip_rows
from shared_models.train.sequences import Windows


def per_window_gradients(model: torch.nn.Module, windows: Windows, *, keys: list[str],
                         device: torch.device | str = "cpu") -> np.ndarray:
    """(windows, parameters) float64: each window's gradient of the ``keys`` parameters, flattened in that order."""
    params = dict(model.named_parameters())
    missing = [k for k in keys if k not in params]
    if missing:
        raise KeyError(f"model has no parameter {missing[0]!r}")
    n_params = sum(params[k].numel() for k in keys)
    if len(windows) == 0:
        return np.zeros((0, n_params))
    wanted = set(keys)
    saved = {k: p.requires_grad for k, p in params.items()}
    for k, p in params.items():
        p.requires_grad_(k in wanted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus and torch warn about full backward hooks
        gsm = GradSampleModule(model, loss_reduction="mean")
    try:
        model.train()
        batch = {"inputs": torch.from_numpy(windows.inputs).to(device),
                 "targets": torch.from_numpy(windows.targets).to(device)}
        model.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gsm._module.calculate_loss(batch).backward()  # hooks on the wrapped submodules fill grad_sample
        rows = [params[k].grad_sample.detach().reshape(len(windows), -1).to(torch.float64) for k in keys]
        return torch.cat(rows, dim=1).cpu().numpy()
    finally:
        gsm._close()  # remove the hooks and grad_sample attributes: the model is reusable
        for k, p in params.items():
            p.grad = None
            p.requires_grad_(saved[k])


def clipped_gradient_sum(model: torch.nn.Module, windows: Windows, *, keys: list[str], clip: float,
                         device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(sum over ``windows`` of each window's gradient clipped to L2 ``clip``, the norms before clipping)."""
    clipped, norms = clip_rows(per_window_gradients(model, windows, keys=keys, device=device), clip=clip)
    return clipped.sum(axis=0), norms
