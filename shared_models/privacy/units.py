"""What an epsilon protects, by ``privacy.mode``, and the delta a device-level ledger uses."""

from __future__ import annotations

from shared_models.config import Config

# add/remove one disjoint training window (device ledger), or one whole device
PRIVACY_UNIT = {"none": None, "example": "window", "user": "user", "example+user": "user", "window": "window"}
EXAMPLE_MODES = ("example", "example+user")  # modes with DP-SGD (and a window-level ledger) on the device
DEVICE_LEDGER_UNIT = "window"


def resolve_delta(cfg: Config, num_interactions: int) -> float:
    """``privacy.delta``, or 1 / (most training interactions on any device) when it is 0."""
    return cfg.privacy.delta if cfg.privacy.delta > 0 else 1.0 / max(1, num_interactions)
