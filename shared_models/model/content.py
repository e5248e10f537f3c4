"""Content scores from public item text and the user's own history: few shared coordinates, no item table.

For every position t and horizon h the user profile is the mean frozen text embedding of the last h items up
to t (causal), L2-normalised; item i scores ``sum_h w_h * cos(t_i, profile_h)``. The text embeddings are
public (a pretrained sentence encoder over titles and genres) and the history never leaves the device, so the
only parameters learned from users are the ``len(horizons)`` weights ``w``: under DP the noise falls on a
handful of coordinates instead of an item table. With the DP popularity prior as output bias this scorer
ranks above popularity before any round has trained (docs/results.md).

``w`` is an ``nn.Linear(H, 1)`` (applied to the profiles) so Opacus' per-sample gradient hooks cover it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared_models.train.sequences import PAD


class ContentScorer(nn.Module):
    def __init__(self, *, text: torch.Tensor, horizons: tuple[int, ...], init_weight: float) -> None:
        super().__init__()
        if not horizons or any(h < 1 for h in horizons):
            raise ValueError(f"model.content_horizons must be positive window lengths, got {horizons}")
        self.horizons = tuple(int(h) for h in horizons)
        self.register_buffer("text", F.normalize(text.float(), dim=-1), persistent=False)  # (I, E)
        self.weights = nn.Linear(len(self.horizons), 1, bias=False)
        with torch.no_grad():
            self.weights.weight.fill_(init_weight)

    def profiles(self, items: torch.Tensor) -> torch.Tensor:
        """(B, T) left-padded items -> (B, T, H, E) normalised mean text of the last h items up to each t."""
        emb = self.text[items] * (items != PAD).unsqueeze(-1)  # (B, T, E)
        csum = F.pad(emb.cumsum(dim=1), (0, 0, 1, 0))  # (B, T+1, E): csum[:, t+1] = sum of emb[:, :t+1]
        T = items.shape[1]
        pos = torch.arange(T, device=items.device)
        out = []
        for h in self.horizons:
            start = (pos + 1 - h).clamp(min=0)  # (T,)
            out.append(csum[:, pos + 1] - csum[:, start])  # (B, T, E) sum over the window (padding adds 0)
        return F.normalize(torch.stack(out, dim=2), dim=-1)  # (B, T, H, E); an all-padding window stays 0

    def forward(self, items: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) -> (B, C, I) content scores at positions ``cols`` ((C,) indices; every position when None).

        sum_h w_h cos(t_i, p_h) = t_i . (sum_h w_h p_h): the weights mix the profiles first, so one
        (B*C, E) x (E, I) product scores the catalogue."""
        profiles = self.profiles(items)  # (B, T, H, E): cumulative sums, cheap at every position
        if cols is not None:
            profiles = profiles[:, cols]  # (B, C, H, E)
        mixed = self.weights(profiles.transpose(-1, -2)).squeeze(-1)  # (B, C, E, H) -> (B, C, E)
        return mixed @ self.text.T  # (B, C, I)

    def last(self, items: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, I) content scores at the last position only (ranking)."""
        return self.forward(items[:, -max(self.horizons):])[:, -1]
