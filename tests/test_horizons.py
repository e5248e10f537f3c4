"""Long and short as horizons (``model.strict-short``), and scoring only the positions that carry targets."""

import numpy as np
import pytest
import torch

from shared_models.config import ModelConfig, build_config
from shared_models.model.interest import InterestModel
from shared_models.train.dp_training import train_local_dp
from shared_models.train.sequences import build_windows
from shared_models.train.training import batch_to_device

NUM_ITEMS, T, K = 60, 16, 4


def _model(kind: str = "long-short", strict: bool = True) -> InterestModel:
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, hidden=16, max_len=T, short_len=K, num_heads=2, inner=32, dropout=0.0,
                      strict_short=strict)
    return InterestModel(cfg, NUM_ITEMS).eval()


def _history(seed: int = 3, pad: int = 2) -> torch.Tensor:
    x = torch.randint(1, NUM_ITEMS, (2, T), generator=torch.Generator().manual_seed(seed))
    x[1, :pad] = 0
    return x


def test_an_item_beyond_short_len_changes_the_long_view_but_not_the_strict_short_one():
    m = _model()
    x = _history()
    far = T - K - 3  # well outside the last K positions
    x2 = x.clone()
    x2[:, far] = x2[:, far] % (NUM_ITEMS - 1) + 1
    a, b = m.encode(x), m.encode(x2)
    last = slice(T - 1, T)
    assert not torch.allclose(a["long"][:, last], b["long"][:, last], atol=1e-4)
    assert torch.equal(a["short"][:, last], b["short"][:, last])
    # positions whose window [t - K + 1, t] contains the change do move
    assert not torch.allclose(a["short"][:, far + K - 1], b["short"][:, far + K - 1], atol=1e-4)
    # the non-strict short encoder's GRU carries the far item forward
    loose = _model(strict=False)
    assert not torch.allclose(loose.encode(x)["short"][:, last], loose.encode(x2)["short"][:, last], atol=1e-4)


def test_strict_short_at_a_position_equals_reading_only_its_window():
    m = _model(kind="short")
    x = _history()
    full = m.encode(x)["user"][:, -1]
    only = x.clone()
    only[:, : T - K] = 0  # everything but the last K items removed
    assert torch.allclose(full, m.encode(only)["user"][:, -1], atol=1e-6)


@pytest.mark.parametrize("kind", ["long", "short", "long-short"])
@pytest.mark.parametrize("strict", [False, True])
def test_columns_give_the_same_loss_and_gradients(kind, strict):
    """Scoring only the positions that carry targets is the same loss as scoring every position."""
    m = _model(kind, strict)
    seqs = [np.arange(1, 40) % (NUM_ITEMS - 1) + 1, np.arange(5, 17)]
    w = build_windows(seqs, max_len=T, stride=3)
    idx = np.arange(len(w))
    plain, cols = batch_to_device(w, idx, "cpu"), batch_to_device(w, idx, "cpu", columns=True)
    assert 0 < len(cols["columns"]) < T
    grads = []
    for batch in (plain, cols):
        m.zero_grad()
        loss = m.calculate_loss(batch)
        loss.backward()
        grads.append((float(loss.detach()), [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for g0, g1 in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(g0, g1, atol=1e-6)


def test_full_sort_predict_is_the_last_position_of_encode():
    m = _model()
    x = _history()
    assert torch.allclose(m.full_sort_predict({"inputs": x}), m.score(m.encode(x)["user"][:, -1]), atol=1e-5)


def test_strict_short_is_refused_by_dp_sgd_and_stride_is_bounded():
    w = build_windows([np.arange(1, 30)], max_len=T)
    with pytest.raises(ValueError, match="strict_short"):
        train_local_dp(_model(), w, epochs=1, lr=0.01, batch_size=2, noise_multiplier=1.0, max_grad_norm=1.0,
                       seed=0)
    with pytest.raises(ValueError, match="train.window_stride"):
        build_config(overrides=["model.max-len=10", "train.window-stride=11"])
    with pytest.raises(ValueError, match="model.strict_short"):
        build_config(overrides=["model.strict-short=true", "federated.backend=cohort", "model.dropout=0"])
