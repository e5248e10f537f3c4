"""Seed means per model and protocol, and paired bootstrap intervals of ours minus the best peer.

Each run is ``{"model", "seed", "ranks": {"masked": [...], "unmasked": [...]}, "wall_s"}`` with the ranks of
the same test users in the same order. Per user, a model's metric is averaged over its seeds; the paired
bootstrap resamples users jointly for ours and the peer.
"""

from __future__ import annotations

import numpy as np

from shared_models.train.evaluation import PROTOCOLS
from shared_models.train.metrics import paired_bootstrap, paired_bootstrap_ratio, per_user_metrics

TABLE_METRICS = ("recall@10", "ndcg@10", "mrr@10")
HEADLINE = "ndcg@10"


def per_user_means(runs: list[dict], protocol: str) -> dict[str, np.ndarray]:
    """Per-user metrics averaged over the runs (seeds) of one model."""
    values = [per_user_metrics(np.asarray(r["ranks"][protocol])) for r in runs]
    return {k: np.mean([v[k] for v in values], axis=0) for k in values[0]}


def summary_rows(runs_by_model: dict[str, list[dict]]) -> dict[str, dict]:
    """Per model: seeds, mean and std over seeds of each metric under each protocol, mean wall seconds."""
    rows = {}
    for name, runs in runs_by_model.items():
        row = {"seeds": [r["seed"] for r in runs], "wall_s": float(np.mean([r["wall_s"] for r in runs]))}
        for p in PROTOCOLS:
            per_seed = [{k: float(v.mean()) for k, v in per_user_metrics(np.asarray(r["ranks"][p])).items()}
                        for r in runs]
            row[p] = {k: {"mean": float(np.mean([s[k] for s in per_seed])),
                          "std": float(np.std([s[k] for s in per_seed]))} for k in per_seed[0]}
        rows[name] = row
    return rows


def ours_vs_best_peer(runs_by_model: dict[str, list[dict]], *, ours: str, peers: list[str], num_samples: int,
                      seed: int = 0) -> dict[str, dict]:
    """Per protocol: the best peer (highest seed-mean NDCG@10), ours minus it and ours / it with 95% intervals."""
    out = {}
    for p in PROTOCOLS:
        means = {m: per_user_means(runs_by_model[m], p) for m in [ours, *peers] if runs_by_model.get(m)}
        candidates = [m for m in peers if m in means]
        if ours not in means or not candidates:
            continue
        best = max(candidates, key=lambda m: means[m][HEADLINE].mean())
        cmp = {"best_peer": best}
        for k in TABLE_METRICS:
            diff, lo, hi = paired_bootstrap(means[ours][k], means[best][k], num_samples=num_samples, seed=seed)
            ratio, rlo, rhi = paired_bootstrap_ratio(means[ours][k], means[best][k], num_samples=num_samples,
                                                     seed=seed)
            cmp[k] = {"diff": diff, "diff_ci": [lo, hi], "ratio": ratio, "ratio_ci": [rlo, rhi]}
        out[p] = cmp
    return out


def format_table(rows: dict[str, dict]) -> str:
    """A markdown table: one row per model, masked and unmasked metrics (mean ± std over seeds)."""
    head = ["model", "seeds", *(f"{p} {m}" for p in PROTOCOLS for m in TABLE_METRICS), "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, row in rows.items():
        cells = [name, str(len(row["seeds"]))]
        for p in PROTOCOLS:
            for m in TABLE_METRICS:
                v = row[p][m]
                cells.append(f"{v['mean']:.4f}" + (f" ± {v['std']:.4f}" if len(row["seeds"]) > 1 else ""))
        cells.append(f"{row['wall_s']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_comparison(cmp: dict[str, dict], ours: str) -> str:
    lines = []
    for p, c in cmp.items():
        parts = [f"{k} {v['diff']:+.4f} [{v['diff_ci'][0]:+.4f}, {v['diff_ci'][1]:+.4f}], ratio {v['ratio']:.3f} "
                 f"[{v['ratio_ci'][0]:.3f}, {v['ratio_ci'][1]:.3f}]" for k, v in c.items() if k != "best_peer"]
        lines.append(f"- {p}: {ours} minus best peer ({c['best_peer']}): " + "; ".join(parts))
    return "\n".join(lines)
