"""A real sweep (the fixture of test_sweep.py): tracking of every point and reference, and its report page."""

import base64
import re

import pytest

from simulations.report.write import write_report
from simulations.sweep import run as sweep_mod
from simulations.sweep.spec import parse_sweep
from shared_models.tracking import TRACKING_DIR
from tests.test_sweep import PNGS, swept, tiny_sweep_doc  # noqa: F401 (swept is the module fixture)

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed (pip install tensorboard)")


def _tags(log_dir) -> set[str]:
    acc = event_accumulator.EventAccumulator(str(log_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_every_point_and_the_central_reference_are_tracked(swept):  # noqa: F811
    _, out, result = swept
    points = sorted((out / sweep_mod.POINTS_DIR).iterdir())
    assert len(points) == 3
    for point in points:
        assert {"devices/participants", "privacy/epsilon_max", "valid/ndcg@10"} <= _tags(point / TRACKING_DIR)
    assert {"train/loss", "valid/ndcg@10"} <= _tags(out / sweep_mod.REFERENCES_DIR / TRACKING_DIR / "central")


def test_switching_tracking_off_reuses_the_finished_points(swept, monkeypatch):  # noqa: F811
    spec, out, _ = swept
    monkeypatch.setattr(sweep_mod, "simulate", lambda *a, **k: pytest.fail("a finished point ran again"))
    monkeypatch.setattr(sweep_mod, "train_central", lambda *a, **k: pytest.fail("a reference ran again"))
    quiet = parse_sweep(tiny_sweep_doc(spec.base["data"]["dataset"]), ["tracking.tensorboard=false"])
    again = sweep_mod.run_sweep(quiet, out, progress=False)
    assert (again.ran, again.skipped) == (0, 5)


def test_sweep_report_embeds_the_sweep_plots(swept):  # noqa: F811
    _, out, _ = swept
    text = write_report(out).read_text()
    embedded = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]
    assert sorted(embedded) == sorted((out / name).read_bytes() for name in PNGS)
    for point in (out / sweep_mod.POINTS_DIR).iterdir():
        assert point.name in text
