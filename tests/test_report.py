"""fedinterest report: every section, valid inline PNGs, nothing external; the page in headless Chromium."""

import base64
import io
import json
import re
from types import SimpleNamespace

import matplotlib.image
import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from shared_models.datasets.load import load_split
from shared_models.model.popularity import PopularityModel
from shared_models.train.evaluation import evaluate_split
from simulations.audit.run import audit_run
from simulations.cli.main import app
from simulations.report.baselines import POPULARITY_FILE
from simulations.report.browser import check_page, find_chromium
from simulations.report.run_page import RUN_SECTIONS, _masking
from simulations.report.sweep_page import SWEEP_SECTIONS
from simulations.report.write import write_report
from simulations.simulate import simulate
from simulations.sweep import summary as sweep_summary
from tests.fed_helpers import synthetic_csv, tiny_config

DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished private run with validation every round, audited, plus a non-private reference JSON."""
    tmp = tmp_path_factory.mktemp("report")
    cfg = tiny_config(synthetic_csv(tmp / "s.csv", users=10, items=30),
                      federated={"num-server-rounds": 3, "eval-every": 1}, tracking={"tensorboard": False})
    run = tmp / "run"
    simulate(cfg, run, progress=False)
    audit_run(run)
    (tmp / "central.json").write_text(json.dumps({"model": "long-short", "metrics": {
        "recall@10": 0.5, "recall@20": 0.625, "ndcg@10": 0.25, "ndcg@20": 0.375, "mrr@10": 0.125}}))
    return run


def _pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m, validate=True) for m in DATA_URI.findall(text)]


def test_run_report_has_every_section_valid_pngs_and_nothing_external(run_dir):
    path = write_report(run_dir, reference=run_dir.parent / "central.json")
    assert path == run_dir / "report.html"
    text = path.read_text()
    for anchor in RUN_SECTIONS:
        assert f'<section id="{anchor}">' in text
    pngs = _pngs(text)
    assert len(pngs) == 5  # curves, eps over rounds, eps histogram, participation, cost
    for data in pngs:
        assert data.startswith(PNG_SIGNATURE)
        h, w, _ = matplotlib.image.imread(io.BytesIO(data), format="png").shape
        assert w > 100 and h > 100
    assert not re.search(r"<script|<link|<iframe|https?://|src=\"(?!data:)", text)
    audit = json.loads((run_dir / "audit.json").read_text())
    assert f'verdict: <span class="{"pass" if audit["verdict"] == "PASS" else "fail"}">{audit["verdict"]}' in text


def test_headline_shows_popularity_of_the_run_split_and_the_reference(run_dir):
    cache = run_dir / POPULARITY_FILE
    assert json.loads(cache.read_text())["metrics"]  # simulate computed it for the report
    stale = json.loads(cache.read_text())
    cache.write_text(json.dumps({**stale, "key": {**stale["key"], "max_len": 999},
                                 "metrics": dict.fromkeys(stale["metrics"], 0.9)}))  # another config's
    text = write_report(run_dir, reference=run_dir.parent / "central.json").read_text()
    cfg = tiny_config(synthetic_csv(run_dir.parent / "s.csv", users=10, items=30))
    split = load_split(cfg.data)
    pop, _ = evaluate_split(PopularityModel(split.train, split.num_items), split, stage="test",
                            max_len=cfg.model.max_len, batch_size=cfg.train.eval_batch_size)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    headline = text.split('<section id="headline">')[1].split("</section>")[0]
    rows = {r.split("</td>")[0]: re.findall(r'<td class="num">([^<]*)</td>', r)
            for r in headline.split("<tr><td>")[1:]}
    assert rows["this run (federated)"][:2] == [f"{metrics['metrics'][m]:.4f}" for m in ("recall@10", "ndcg@10")]
    assert rows["popularity"][:2] == [f"{pop[m]:.4f}" for m in ("recall@10", "ndcg@10")]
    assert rows["reference: central.json (long-short)"][:2] == ["0.5000", "0.2500"]
    assert rows["this run (federated)"][-1] == f"{metrics['privacy']['epsilon']:.4f}"


def test_report_command_prints_the_path_and_names_a_directory_that_is_no_run(run_dir, tmp_path):
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out), "--no-popularity"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().endswith(str(out)) and "<tr><td>popularity</td>" not in out.read_text()
    bad = CliRunner().invoke(app, ["report", str(tmp_path)])
    said = " ".join(bad.output.split())
    assert bad.exit_code == 2 and "not a run directory" in said and tmp_path.name in said


def test_sweep_report_embeds_the_sweep_plots_as_they_are(tmp_path):
    rows = [sweep_summary.point_row("nm-1", {"privacy.noise-multiplier": 1.0}, {
        "privacy": {"epsilon": 3.5, "noise_multiplier": 1.0, "delta": 1e-5, "unit": "window"},
        "metrics": dict.fromkeys(sweep_summary.REPORTED_METRICS, 0.1), "timing": {"wall_s": 2.0}, "he": {}})]
    sweep_summary.write_csv(tmp_path / sweep_summary.CSV_NAME, rows, ["privacy.noise-multiplier"])
    (tmp_path / "points" / "nm-1").mkdir(parents=True)
    written = {}
    for name in ("frontier_recall.png", "frontier_ndcg.png", "learning_curves.png"):
        fig = Figure(figsize=(3, 2))
        fig.subplots().plot([1, 2], [1, len(name)])
        fig.savefig(tmp_path / name)
        written[name] = (tmp_path / name).read_bytes()
    text = write_report(tmp_path).read_text()
    for anchor in SWEEP_SECTIONS:
        assert f'<section id="{anchor}">' in text
    assert sorted(_pngs(text)) == sorted(written.values())
    assert "nm-1" in text and "3.5000" in text


@pytest.mark.browser
def test_report_renders_in_headless_chromium_without_console_errors(run_dir, tmp_path):
    if find_chromium() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")
    page = write_report(run_dir, reference=run_dir.parent / "central.json")
    check = check_page(page, screenshot=tmp_path / "report.png")
    assert check.console == []
    assert len(check.images) == len(_pngs(page.read_text())) == 5
    for img in check.images:
        assert img["natural_w"] > 0 and img["natural_h"] > 0 and img["w"] > 0 and img["h"] > 0, img
    shot = check.screenshot.read_bytes()
    assert shot.startswith(PNG_SIGNATURE) and matplotlib.image.imread(io.BytesIO(shot), format="png").shape[1] > 0


@pytest.mark.browser
def test_the_browser_check_catches_console_errors_and_broken_images(tmp_path):
    if find_chromium() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>x</title></head><body>'
                    '<img alt="broken" src="data:image/png;base64,AAAA"><script>console.error("boom")</script>'
                    "</body></html>")
    check = check_page(page)
    assert any('"boom"' in line for line in check.console)
    assert any("failed to load data:image/png" in line for line in check.console)
    assert check.images[0]["natural_w"] == 0


def test_the_cost_section_states_the_masks_or_their_absence():
    masked = SimpleNamespace(metrics={"he": {"enabled": True, "masking": {
        "enabled": True, "neighbours": 25, "threshold": 8, "rounds": 5, "unmasked": 4, "not_ready": 3,
        "mask_bytes_per_device_round": 7450.4, "prepare_s": 9.83, "unmask_s": 4.4}}})
    text = _masking(masked)
    for cell in ("<td>25 / 8</td>", "<td>4 / 5</td>", ">3<", ">7450<", "<td>9.8 / 4.4</td>"):
        assert cell in text
    assert "could read single updates" in _masking(SimpleNamespace(metrics={"he": {"enabled": True}}))
    assert _masking(SimpleNamespace(metrics={"he": {"enabled": False}})) == ""
