"""A real 3-point sweep on tiny synthetic data: summary files, plots, epsilon ordering, resume, failures."""

import csv
import json
import math

import pytest

from simulations.sweep import run as sweep_mod
from simulations.sweep.plots import plot_frontier
from simulations.sweep.spec import parse_sweep
from simulations.sweep.summary import RESULT_COLUMNS, read_csv
from tests.fed_helpers import TINY_MODEL, synthetic_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOISE = "privacy.noise-multiplier"
NOISES = [0.5, 1.0, 2.0]
PNGS = ("frontier_recall.png", "frontier_ndcg.png", "learning_curves.png")


def tiny_sweep_doc(dataset) -> dict:
    return {"data": {"dataset": str(dataset)}, "model": dict(TINY_MODEL),
            "federated": {"backend": "inline", "num-server-rounds": 2, "clients-per-round": 4,
                          "min-train-nodes": 1, "eval-every": 1, "batch-size": 4, "lr": 0.01},
            "privacy": {"mode": "example", "max-grad-norm": 1.0, "target-epsilon": 1000.0, "delta": 1e-5},
            "he": {"enabled": False},
            "sweep": {"grid": {NOISE: NOISES}, "references": ["central", "pop"],
                      "central": {"epochs": 1, "patience": 1}}}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Run the sweep once for the whole module (real simulate and train_central calls)."""
    root = tmp_path_factory.mktemp("sweep")
    spec = parse_sweep(tiny_sweep_doc(synthetic_csv(root / "s.csv", users=10, items=30)), source="tiny.toml")
    out = root / "out"
    return spec, out, sweep_mod.run_sweep(spec, out, progress=False)


def test_sweep_writes_summary_rows_with_the_contract_columns(swept):
    spec, out, result = swept
    assert (result.ran, result.skipped, result.failed) == (5, 0, [])
    with (out / "summary.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header == ["name", "kind", NOISE, *RESULT_COLUMNS]
    rows = read_csv(out / "summary.csv")
    points = [r for r in rows if r["kind"] == "point"]
    assert [r[NOISE] for r in points] == ["0.5", "1.0", "2.0"]
    assert [r["noise_multiplier"] for r in points] == NOISES
    assert [r["name"] for r in rows if r["kind"] == "reference"] == ["central", "pop"]
    for r in rows:
        assert all(0.0 <= r[m] <= 1.0 for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10"))
        assert r["recall@20"] >= r["recall@10"] and r["wall_s"] >= 0
    assert all(r["unit"] and r["delta"] == 1e-5 and r["bytes_per_param"] == 4.0 for r in points)
    assert all(math.isinf(r["epsilon"]) for r in rows if r["kind"] == "reference")
    md = (out / "summary.md").read_text()
    assert "fedinterest sweep --config tiny.toml --out" in md and md.count("\n| ") == len(rows) + 1


def test_epsilon_strictly_falls_as_noise_rises(swept):
    _, out, _ = swept
    eps = [r["epsilon"] for r in read_csv(out / "summary.csv") if r["kind"] == "point"]
    assert all(math.isfinite(e) and e > 0 for e in eps)
    assert eps[0] > eps[1] > eps[2]


def test_plots_are_pngs_with_one_series_and_both_reference_lines(swept):
    _, out, result = swept
    for name in PNGS:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert len(result.plots["frontier_recall.png"].series) == 1
    assert result.plots["frontier_recall.png"].references == ("central", "pop")
    assert len(result.plots["learning_curves.png"].series) == 3


def test_rerun_skips_every_finished_run_and_reproduces_the_summary(swept, monkeypatch):
    spec, out, _ = swept
    before = {n: (out / n).read_bytes() for n in ("summary.csv", "summary.md")}

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("a finished run was started again")

    monkeypatch.setattr(sweep_mod, "simulate", must_not_run)
    monkeypatch.setattr(sweep_mod, "train_central", must_not_run)
    again = sweep_mod.run_sweep(spec, out, progress=False)
    assert (again.ran, again.skipped) == (0, 5)
    assert {n: (out / n).read_bytes() for n in before} == before


def test_a_finished_run_made_with_another_config_is_an_error_not_reused(swept, monkeypatch):
    spec, out, _ = swept
    monkeypatch.setattr(sweep_mod, "simulate", lambda *a, **k: pytest.fail("must not run"))
    changed = parse_sweep(tiny_sweep_doc(spec.base["data"]["dataset"]), ["federated.lr=0.02"])
    with pytest.raises(sweep_mod.SweepError, match=r"points/.*another config \(federated.lr: 0.01 -> 0.02\)"):
        sweep_mod.run_sweep(changed, out, progress=False)


def test_frontier_draws_one_series_per_other_key_and_places_no_dp_at_infinity(tmp_path):
    keys = [NOISE, "privacy.mode", "he.enabled"]

    def row(noise, mode, he, eps, recall):
        return {"name": f"{noise}{mode}{he}", "kind": "point", NOISE: noise, "privacy.mode": mode,
                "he.enabled": he, "epsilon": eps, "noise_multiplier": noise or 0.0, "delta": 1e-5,
                "unit": "interaction", "recall@10": recall}

    rows = [row(1.0, "example", he, 4.0, 0.2) for he in (True, False)]
    rows += [row(None, "none", he, math.inf, 0.3) for he in (True, False)]
    rows += [{"name": "pop", "kind": "reference", "epsilon": math.inf, "recall@10": 0.1}]
    info = plot_frontier(rows, keys, tmp_path / "f.png")
    assert info.series == ("he.enabled=true", "he.enabled=false") and info.references == ("pop",)
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_MAGIC


def test_a_failing_point_is_reported_after_the_others_finish(tmp_path, monkeypatch):
    doc = tiny_sweep_doc(tmp_path / "unused.csv")
    doc["sweep"]["references"] = []
    spec = parse_sweep(doc)
    calls = []

    def fake_simulate(cfg, run_dir, *, progress):
        calls.append(cfg.privacy.noise_multiplier)
        if cfg.privacy.noise_multiplier == 1.0:
            raise RuntimeError("boom")
        (run_dir / "history.csv").parent.mkdir(parents=True, exist_ok=True)
        (run_dir / "history.csv").write_text("round,loss,epsilon_max,recall@10\n1,2.0,1.0,\n")
        result = {"metrics": dict.fromkeys(("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10"), 0.1),
                  "privacy": {"epsilon": 1 / cfg.privacy.noise_multiplier, "delta": 1e-5, "unit": "interaction",
                              "noise_multiplier": cfg.privacy.noise_multiplier},
                  "he": {"enabled": False}, "timing": {"wall_s": 0.1}}
        (run_dir / "metrics.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(sweep_mod, "simulate", fake_simulate)
    with pytest.raises(sweep_mod.SweepError, match=r"1 of 3 .*privacy.noise-multiplier-1.0"):
        sweep_mod.run_sweep(spec, tmp_path / "out", progress=False)
    assert calls == NOISES
    assert [r["noise_multiplier"] for r in read_csv(tmp_path / "out" / "summary.csv")] == [0.5, 2.0]
    assert "failed (not in the table): privacy.noise-multiplier-1.0" in (tmp_path / "out" / "summary.md").read_text()
