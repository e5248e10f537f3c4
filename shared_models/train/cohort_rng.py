"""Per-device randomness for cohort DP-SGD: Poisson sampling masks and Gaussian noise for K devices at once.

Two modes:
- ``exact=True`` (default): every device owns a CPU ``torch.Generator`` seeded with its own seed and draws from
  it in exactly the order Opacus does inside ``train_local_dp`` (one int64 per epoch for the DataLoader's base
  seed, ``rand(n)`` per step for the Poisson mask, then ``normal(0, sigma*C)`` per parameter in
  ``named_parameters`` order). A cohort device therefore sees the same batches and the same noise as the
  one-device-at-a-time path with the same seed. Costs a Python loop over devices per step.
- ``exact=False``: one generator on the compute device draws all masks and noise as (K, ...) tensors.
  Statistically the same mechanism (fresh independent Gaussians, independent Poisson masks), not the same
  streams; this is the mode for large GPU cohorts.
"""

from __future__ import annotations

import torch


class DeviceStreams:
    """The random streams of K devices; ``rates[k]`` is device k's Poisson rate q_k."""

    def __init__(self, seeds: list[int], sizes: list[int], rates: list[float], *, exact: bool = True,
                 device: torch.device | str = "cpu") -> None:
        if not (len(seeds) == len(sizes) == len(rates)):
            raise ValueError(f"{len(seeds)} seeds, {len(sizes)} sample counts, {len(rates)} rates: must match")
        self.exact, self.device = exact, torch.device(device)
        self.sizes, self.rates = list(sizes), list(rates)
        if exact:
            self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        else:
            mixed = sum((i + 1) * 1_000_003 * int(s) for i, s in enumerate(seeds)) % (2**63 - 1)
            self.gen = torch.Generator(device=self.device).manual_seed(mixed)
        n_max = max(sizes)
        self._valid = torch.arange(n_max, device=self.device)[None] < torch.tensor(sizes, device=self.device)[:, None]
        self._q = torch.tensor(rates, dtype=torch.float64, device=self.device)

    def epoch_start(self, starting: list[int]) -> None:
        """Devices in ``starting`` open a new epoch: Opacus' DataLoader iterator draws one int64 base seed."""
        if self.exact:
            for k in starting:
                torch.empty((), dtype=torch.int64).random_(generator=self.gens[k])

    def sample(self, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Poisson batches of the active devices: (K, B) sample indices and (K, B) validity (B = largest batch)."""
        if self.exact:
            rows = [torch.zeros(0, dtype=torch.bool)] * len(self.sizes)
            for k in active.nonzero().flatten().tolist():
                rows[k] = torch.rand(self.sizes[k], generator=self.gens[k]) < self.rates[k]  # (n_k,)
            chosen = torch.zeros_like(self._valid)  # (K, n_max)
            for k, row in enumerate(rows):
                chosen[k, :len(row)] = row.to(self.device)
        else:
            u = torch.rand(self._valid.shape, generator=self.gen, device=self.device, dtype=torch.float64)
            chosen = (u < self._q[:, None]) & self._valid & active[:, None]  # (K, n_max)
        return _compact(chosen)

    def noise(self, shapes: dict[str, torch.Size], std: float, active: torch.Tensor) -> dict[str, torch.Tensor]:
        """(K, *shape) Gaussian noise N(0, std^2) per parameter; zero for inactive devices (and when std = 0)."""
        K = len(self.sizes)
        out = {n: torch.zeros((K, *s), device=self.device) for n, s in shapes.items()}
        if std == 0:
            return out  # Opacus draws nothing when std == 0
        if self.exact:
            for k in active.nonzero().flatten().tolist():
                for n, s in shapes.items():  # named_parameters order, as Opacus' optimizer params
                    out[n][k] = torch.normal(0, std, size=tuple(s), generator=self.gens[k]).to(self.device)
            return out
        keep = active.to(torch.float32)
        for n, s in shapes.items():
            z = torch.randn((K, *s), generator=self.gen, device=self.device)  # (K, *shape)
            out[n] = z.mul_(std) * keep.view(K, *([1] * len(s)))
        return out


def _compact(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, n) bool -> (K, B) indices of the chosen samples (left-aligned, padded with 0) and (K, B) validity."""
    counts = chosen.sum(dim=1)  # (K,)
    B = int(counts.max()) if chosen.numel() else 0
    order = torch.argsort((~chosen).to(torch.int8), dim=1, stable=True)[:, :B]  # chosen first, in index order
    mask = torch.arange(B, device=chosen.device)[None] < counts[:, None]  # (K, B)
    return torch.where(mask, order, torch.zeros_like(order)), mask
