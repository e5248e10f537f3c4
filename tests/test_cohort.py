"""Vectorized cohort DP-SGD (``shared_models.train.cohort``) against Opacus' one-device-at-a-time path."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from client.device import dp_plan
from shared_models.train.cohort import train_cohort_dp
from shared_models.config import ModelConfig
from shared_models.train.dp_training import train_local_dp
from shared_models.model.interest import InterestModel
from shared_models.train.sequences import Windows, build_windows

torch.set_num_threads(1)
ITEMS, LR, CLIP = 30, 0.05, 0.5


def tiny_cfg(kind: str = "long-short", dropout: float = 0.0) -> ModelConfig:
    return ModelConfig(kind=kind, hidden=8, max_len=6, short_len=3, num_layers=1, num_heads=2, inner=16,
                       dropout=dropout)


def make_devices(K: int = 3, kind: str = "long-short", text: torch.Tensor | None = None):
    """K devices with different inits and 1..K windows each (so the cohort pads samples)."""
    rng = np.random.default_rng(0)
    models, windows = [], []
    for k in range(K):
        torch.manual_seed(100 + k)
        models.append(InterestModel(tiny_cfg(kind), ITEMS, text=text))
        windows.append(build_windows([rng.integers(1, ITEMS, size=5 + 7 * k)], max_len=6))
    assert [len(w) for w in windows] == list(range(1, K + 1))
    return models, windows


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def opacus_one_by_one(models, windows, seeds, **kw):
    out = []
    for m, w, s in zip(models, windows, seeds):
        m = copy.deepcopy(m)
        res = train_local_dp(m, w, max_grad_norm=CLIP, lr=LR, seed=s, **kw)
        out.append((weights(m), res))
    return out


@pytest.mark.parametrize("sigma", [1.0, 0.0])
def test_full_batch_equals_opacus(sigma: float) -> None:
    """q = 1 (batch >= windows): same weights, loss and ledger numbers as train_local_dp, noise included."""
    models, windows = make_devices()
    seeds = [11, 12, 13]
    kw = dict(epochs=2, batch_size=100, noise_multiplier=sigma, optimizer="sgd")
    cohort = train_cohort_dp(models[0], [weights(m) for m in models], windows, max_grad_norm=CLIP, lr=LR,
                             seeds=seeds, **kw)
    for (ref_w, ref), got in zip(opacus_one_by_one(models, windows, seeds, **kw), cohort):
        assert max_diff(ref_w, got.params) < 1e-4
        assert got.train.sample_rate == ref.sample_rate == 1.0 and got.train.steps == ref.steps == 2
        assert got.train.loss == pytest.approx(ref.loss, abs=1e-5)


@pytest.mark.parametrize("kind", ["long-short", "long", "short"])
def test_poisson_adam_equals_opacus(kind: str) -> None:
    """q < 1 with different step counts per device, Adam: the exact RNG replay gives the same batches."""
    models, windows = make_devices(kind=kind)
    seeds = [5, 6, 7]
    kw = dict(epochs=2, batch_size=1, noise_multiplier=0.8, optimizer="adam")
    cohort = train_cohort_dp(models[0], [weights(m) for m in models], windows, max_grad_norm=CLIP, lr=LR,
                             seeds=seeds, **kw)
    for (ref_w, ref), got, w in zip(opacus_one_by_one(models, windows, seeds, **kw), cohort, windows):
        assert max_diff(ref_w, got.params) < 1e-4
        assert (got.train.sample_rate, got.train.steps) == (ref.sample_rate, ref.steps)
        assert (got.train.sample_rate, got.train.steps) == dp_plan(len(w), batch_size=1, epochs=2)


def test_text_buffers_and_stacked_params() -> None:
    """Frozen text embeddings (a buffer) and a pre-stacked {name: (K, ...)} parameter dict."""
    text = torch.randn(ITEMS, 5, generator=torch.Generator().manual_seed(0))
    models, windows = make_devices(K=2, text=text)
    stacked = {n: torch.stack([weights(m)[n] for m in models]) for n in weights(models[0])}
    kw = dict(epochs=1, batch_size=100, noise_multiplier=1.0, optimizer="sgd")
    cohort = train_cohort_dp(models[0], stacked, windows, max_grad_norm=CLIP, lr=LR, seeds=[1, 2], **kw)
    for (ref_w, _), got in zip(opacus_one_by_one(models, windows, [1, 2], **kw), cohort):
        assert max_diff(ref_w, got.params) < 1e-4


def test_clipping_is_per_device() -> None:
    """A device with huge gradients changes nothing for the others, and its own update is clipped."""
    models, windows = make_devices()
    params = [weights(m) for m in models]
    kw = dict(epochs=1, lr=LR, batch_size=100, noise_multiplier=0.0, max_grad_norm=CLIP, seeds=[1, 2, 3],
              optimizer="sgd")
    calm = train_cohort_dp(models[0], params, windows, **kw)
    wild = [dict(p) for p in params]
    wild[2]["item_emb.weight"] = params[2]["item_emb.weight"] * 1e3  # logits ~1e6 * init: huge gradients
    wild_res = train_cohort_dp(models[0], wild, windows, **kw)
    for k in (0, 1):
        assert max_diff(calm[k].params, wild_res[k].params) == 0.0
    def step_norm(res) -> float:
        return float(torch.cat([(res[2].params[n] - wild[2][n]).flatten() for n in wild[2]]).norm())

    assert step_norm(wild_res) <= LR * CLIP * (1 + 1e-4)  # sum of n clipped grads / n, full batch
    unclipped = train_cohort_dp(models[0], wild, windows, **{**kw, "max_grad_norm": 1e12})
    assert step_norm(unclipped) > 100 * LR * CLIP  # the gradients really were huge


def test_padding_and_cohort_membership_do_not_matter() -> None:
    """A device trained alone equals the same device trained inside a padded cohort."""
    models, windows = make_devices()
    kw = dict(epochs=2, lr=LR, batch_size=1, noise_multiplier=1.0, max_grad_norm=CLIP, optimizer="adam")
    cohort = train_cohort_dp(models[0], [weights(m) for m in models], windows, seeds=[4, 5, 6], **kw)
    alone = train_cohort_dp(models[0], [weights(models[0])], windows[:1], seeds=[4], **kw)
    assert max_diff(alone[0].params, cohort[0].params) < 1e-6


def test_fast_rng_without_noise_equals_exact() -> None:
    """With q = 1 and sigma = 0 there is no randomness: the on-device RNG mode gives the same result."""
    models, windows = make_devices()
    kw = dict(epochs=1, lr=LR, batch_size=100, noise_multiplier=0.0, max_grad_norm=CLIP, seeds=[1, 2, 3])
    exact = train_cohort_dp(models[0], [weights(m) for m in models], windows, **kw)
    fast = train_cohort_dp(models[0], [weights(m) for m in models], windows, exact_rng=False, **kw)
    for a, b in zip(exact, fast):
        assert max_diff(a.params, b.params) < 1e-6


def test_rejects_dropout_and_bad_inputs() -> None:
    model = InterestModel(tiny_cfg(dropout=0.1), ITEMS)
    w = build_windows([np.arange(1, 9)], max_len=6)
    with pytest.raises(ValueError, match="dropout"):
        train_cohort_dp(model, [weights(model)], [w], epochs=1, lr=LR, batch_size=4, noise_multiplier=1.0,
                        max_grad_norm=CLIP, seeds=[0])
    empty = Windows(np.zeros((0, 6), np.int64), np.zeros((0, 6), np.int64))
    with pytest.raises(ValueError, match="window"):
        train_cohort_dp(InterestModel(tiny_cfg(), ITEMS), [weights(model)], [empty], epochs=1, lr=LR,
                        batch_size=4, noise_multiplier=1.0, max_grad_norm=CLIP, seeds=[0])


def test_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cohort.py"
    spec = importlib.util.spec_from_file_location("bench_cohort", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--devices", "3", "--items", "20", "--hidden", "8", "--max-len", "6", "--cohort-size", "2"])
    out = capsys.readouterr().out
    assert "cohort" in out and "per-device" in out
    diff = float(out.rsplit("devices:", 1)[1].split()[0])
    assert diff < 1e-4
