"""TorchScript export: self-contained, same top-10 as the PyTorch model, int8 top-10 overlap >= 9/10."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from client.export import export_model, load_exported
from client.recommend import Recommender
from shared_models.datasets.load import load_split
from shared_models.train.sequences import left_pad
from tests.test_device_helpers import make_device, train_central

USERS, ITEMS = 40, 200


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    state = make_device(tmp, users=USERS, items=ITEMS)
    model = train_central(state, epochs=8)
    fp32 = export_model(state, tmp / "model.pt")
    int8 = export_model(state, tmp / "model-int8.pt", int8=True)
    histories = load_split(Recommender(state).cfg.data).train
    return state, model, fp32, int8, histories


def _top10(scores: torch.Tensor, history: np.ndarray) -> list[int]:
    scores = scores.clone()
    scores[torch.from_numpy(np.append(history, 0))] = -torch.inf
    return scores.topk(10).indices.tolist()


def _inputs(history: np.ndarray, max_len: int) -> torch.Tensor:
    return torch.from_numpy(left_pad(history, max_len)).unsqueeze(0)


def test_export_round_trips_to_the_same_top10(exported):
    _, model, fp32, _, histories = exported
    module, meta = load_exported(fp32)
    assert meta["max_len"] == model.cfg.max_len and meta["num_items"] == model.num_items and not meta["int8"]
    assert len(meta["item_ids"]) == model.num_items and meta["global_weights"] == "global_shared.npz"
    with torch.no_grad():
        for h in histories:
            x = _inputs(h, model.cfg.max_len)
            ref = model.full_sort_predict({"inputs": x})[0]
            got = module(x)[0]
            assert got.shape == ref.shape
            assert _top10(got, h) == _top10(ref, h)
            window = x[0][x[0] > 0]
            assert torch.all(got[window] == torch.finfo(torch.float32).min)  # window items masked
            keep = torch.ones_like(ref, dtype=torch.bool)
            keep[x[0]] = False
            assert torch.allclose(got[keep], ref[keep], atol=1e-4)


def test_int8_top10_overlap_at_least_nine_of_ten_on_average(exported):
    _, model, fp32, int8, histories = exported
    q, meta = load_exported(int8)
    assert meta["int8"] and int8.stat().st_size < fp32.stat().st_size
    overlaps = []
    with torch.no_grad():
        for h in histories:
            x = _inputs(h, model.cfg.max_len)
            ref = set(_top10(model.full_sort_predict({"inputs": x})[0], h))
            overlaps.append(len(ref & set(_top10(q(x)[0], h))))
    assert np.mean(overlaps) >= 9.0, overlaps


def test_exported_file_loads_without_fedinterest(exported, tmp_path):
    _, model, fp32, _, histories = exported
    code = ("import sys, json, torch; extra={'fedinterest.json': ''}; "
            "m = torch.jit.load(sys.argv[1], _extra_files=extra); meta = json.loads(extra['fedinterest.json']); "
            "x = torch.zeros((1, meta['max_len']), dtype=torch.long); x[0, -3:] = torch.tensor([1, 2, 3]); "
            "s = m(x); bad = [k for k in sys.modules if k.split('.')[0] in ('client', 'shared_models')]; "
            "print(json.dumps({'shape': list(s.shape), 'bad': bad}))")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(fp32)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"shape": [1, model.num_items], "bad": []}
