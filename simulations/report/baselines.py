"""The figures a run's headline metrics are read beside: popularity (computed) and a non-private reference (given).

Popularity ranks items by their count in the run's own training split and goes through the project's
evaluator (``evaluate_split``, test stage, unseen items only), so it is the floor any learned model must pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared_models.atomic_io import atomic_write_json
from shared_models.config import ConfigError, build_config
from simulations.report.rundata import ReportError, read_json

POPULARITY_FILE = "popularity.json"  # RUN_DIR/popularity.json: the baseline computed for the report


def popularity_metrics(config: dict[str, Any]) -> tuple[dict[str, float] | None, str]:
    """Test metrics of the most-popular baseline on the run's split, or None and the reason it is missing."""
    from shared_models.datasets import DatasetError  # torch and the dataset code only when asked
    from shared_models.datasets.load import load_split
    from shared_models.model.popularity import PopularityModel
    from shared_models.train.evaluation import evaluate_split

    try:
        cfg = build_config(config)
        split = load_split(cfg.data)
    except (ConfigError, DatasetError, OSError) as exc:
        return None, f"popularity not computed: {exc}"
    metrics, _ = evaluate_split(PopularityModel(split.train, split.num_items), split, stage="test",
                                max_len=cfg.model.max_len, batch_size=cfg.train.eval_batch_size)
    return metrics, f"most popular training items of the run's split ({len(split.train)} users), same evaluator"


def reference_metrics(path: Path) -> tuple[dict[str, float], str]:
    """A non-private reference: a train-central result or a metrics.json (its ``metrics``), or a flat dict."""
    data = read_json(Path(path))
    metrics = data.get("metrics", data)
    if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
        raise ReportError(f"{path}: expected a 'metrics' object of numbers (a train-central result or metrics.json)")
    what = data.get("model") or ((data.get("config") or {}).get("model") or {}).get("kind") or ""
    return {k: float(v) for k, v in metrics.items()}, f"{Path(path).name}" + (f" ({what})" if what else "")


def cached_popularity(run_dir: Path, config: dict[str, Any]) -> tuple[dict[str, float] | None, str]:
    """:func:`popularity_metrics`, kept in ``RUN_DIR/popularity.json`` for the data and model config it used
    (computing it imports torch and reads the dataset: most of a report's time otherwise)."""
    path = Path(run_dir) / POPULARITY_FILE
    key = {"data": config.get("data"), "max_len": (config.get("model") or {}).get("max_len")}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            saved = {}
        if saved.get("key") == key and isinstance(saved.get("metrics"), dict):
            return saved["metrics"], saved.get("what", "")
    metrics, what = popularity_metrics(config)
    if metrics is not None:
        atomic_write_json(path, {"key": key, "metrics": metrics, "what": what})
    return metrics, what
