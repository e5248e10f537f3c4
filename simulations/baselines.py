"""Reference points printed beside a federated run: popularity on the same devices, and a stored reference.

Popularity is scored on exactly the run's devices and test items with the project's evaluator (the harness
holds every simulated device's data, as it does to make the population). A reference is a JSON file with a
``metrics`` block (a metrics.json of another run, or a measured result with its ``label`` and ``command``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from shared_models.config import Config
from shared_models.datasets.population import population
from shared_models.model.popularity import PopularityModel
from shared_models.train.evaluation import rank_targets
from shared_models.train.metrics import summarize

EVAL_BATCH = 256


def popularity_metrics(cfg: Config) -> dict[str, float]:
    """Test metrics of the most-popular list (training interactions of the run's devices), history masked."""
    pop = population(cfg)
    model = PopularityModel([d.train for d in pop.devices], pop.num_items)
    histories = [np.append(d.train, d.valid) for d in pop.devices]
    targets = np.array([d.test for d in pop.devices])
    ranks = rank_targets(model, histories, targets, num_items=pop.num_items, max_len=cfg.model.max_len,
                         batch_size=EVAL_BATCH)
    return summarize(ranks)


def load_reference(path: Path | str) -> tuple[str, dict[str, float]]:
    """(label, metrics) of a reference file; errors name the file and the field."""
    path = Path(path)
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the reference ({exc})") from None
    metrics = raw.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f"{path}: field 'metrics' missing or empty")
    try:
        metrics = {str(k): float(v) for k, v in metrics.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{path}: field 'metrics' must map metric names to numbers") from None
    return str(raw.get("label", path.stem)), metrics
