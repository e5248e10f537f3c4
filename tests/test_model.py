"""Model shapes, causality, the shared/personal split, and per-sample gradients under Opacus."""

import pytest
import torch
from opacus import GradSampleModule

from shared_models.config import ModelConfig
from shared_models.model.interest import InterestModel

NUM_ITEMS = 120
KINDS = ["long", "short", "long-short"]


def _model(kind: str, text: bool = False, **kw) -> InterestModel:
    torch.manual_seed(0)
    kw.setdefault("text_embeddings", text)
    cfg = ModelConfig(kind=kind, hidden=16, max_len=12, short_len=4, num_heads=2, inner=32, dropout=0.0, **kw)
    uses_text = kw["text_embeddings"] or kw.get("content", False)
    return InterestModel(cfg, NUM_ITEMS, text=torch.randn(NUM_ITEMS, 8) if uses_text else None)


def _batch(B: int = 3, T: int = 12, pad: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, NUM_ITEMS, (B, T), generator=g)
    y = torch.randint(1, NUM_ITEMS, (B, T), generator=g)
    x[:, :pad] = 0
    y[:, :pad] = 0
    return {"inputs": x, "targets": y}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("text", [False, True])
def test_shapes_and_padding_never_recommended(kind, text):
    m = _model(kind, text)
    b = _batch()
    enc = m.encode(b["inputs"])
    assert enc["user"].shape == (3, 12, 16)
    scores = m.full_sort_predict(b)
    assert scores.shape == (3, NUM_ITEMS)
    assert (scores[:, 0] < scores[:, 1:].min(dim=1).values).all()
    loss = m.calculate_loss(b)
    assert loss.ndim == 0 and torch.isfinite(loss)
    if kind == "long-short":
        assert set(enc) == {"user", "long", "short", "gate"}
        g = enc["gate"]
        assert torch.allclose(enc["user"], g * enc["long"] + (1 - g) * enc["short"])


@pytest.mark.parametrize("kind", KINDS)
def test_no_future_leakage(kind):
    """Changing the item at t+1 leaves every output at positions <= t unchanged."""
    m = _model(kind).eval()
    x = _batch(B=2, pad=0)["inputs"]
    t = 6
    x2 = x.clone()
    x2[:, t + 1:] = (x2[:, t + 1:] % (NUM_ITEMS - 1)) + 1  # different items after t
    assert not torch.equal(x, x2)
    u1, u2 = m.encode(x)["user"], m.encode(x2)["user"]
    assert torch.allclose(u1[:, : t + 1], u2[:, : t + 1], atol=1e-6)
    assert not torch.allclose(u1[:, t + 1:], u2[:, t + 1:], atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_shared_and_personal_partition_all_parameters(kind):
    m = _model(kind, text=True)
    shared, personal = m.shared_state(), m.personal_state()
    assert not set(shared) & set(personal)
    assert set(shared) | set(personal) == {n for n, _ in m.named_parameters()}
    assert "item_emb.weight" in shared and "scorer.weight" not in shared  # tied, counted once
    if kind != "long":
        assert any(k.startswith("short.") for k in personal)
    if kind == "long-short":
        assert any(k.startswith("gate.") for k in personal)
        assert any(k.startswith("long.") for k in shared)


def test_load_shared_state_roundtrip_and_errors():
    a, b = _model("long-short"), _model("long-short")
    with torch.no_grad():
        for p in a.parameters():
            p.add_(1.0)
    b.load_shared_state(a.shared_state())
    assert all(torch.equal(v, b.shared_state()[k]) for k, v in a.shared_state().items())
    assert not torch.equal(a.personal_state()["gate.w.weight"], b.personal_state()["gate.w.weight"])
    with pytest.raises(KeyError, match="missing"):
        b.load_shared_state({})


@pytest.mark.parametrize("kind", KINDS)
def test_opacus_per_sample_gradients_equal_microbatch_gradients(kind):
    """Opacus' per-sample gradients match one backward pass per sample (tied weights, DPGRU, padding)."""
    m = _model(kind, text=True)
    ref = _model(kind, text=True)
    ref.load_state_dict(m.state_dict())
    ref.text = m.text.clone()
    GradSampleModule(m, loss_reduction="mean")
    b = _batch()
    m.calculate_loss(b).backward()
    for i in range(3):
        ref.zero_grad()
        ref.calculate_loss({k: v[i:i + 1] for k, v in b.items()}).backward()
        per_sample = torch.cat([p.grad_sample[i].flatten() for _, p in m.named_parameters()])
        micro = torch.cat([p.grad.flatten() for _, p in ref.named_parameters()])
        assert (per_sample - micro).norm() / micro.norm() < 1e-5


def test_rejects_pop_and_bad_text_shape():
    with pytest.raises(ValueError, match="pop"):
        InterestModel(ModelConfig(kind="pop"), NUM_ITEMS)
    with pytest.raises(ValueError, match="rows"):
        InterestModel(ModelConfig(kind="long"), NUM_ITEMS, text=torch.zeros(5, 8))


def test_text_only_items_learn_nothing_item_specific():
    """item_ids = false: no ID table; scores come from the frozen text through learned projections only."""
    m = _model("long-short", text=True, item_ids=False)
    names = [n for n, _ in m.named_parameters()]
    assert not any(n.startswith(("item_emb.", "scorer.")) for n in names)
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == sum(p.numel() for p in _model("long-short", text=True).parameters()) - NUM_ITEMS * 16
    b = _batch()
    scores = m.full_sort_predict(b)
    assert scores.shape == (3, NUM_ITEMS) and (scores[:, 0] < scores[:, 1:].min(dim=1).values).all()
    user = m.encode(b["inputs"])["user"][:, -1]
    assert torch.allclose(scores[:, 1:], (m.text_out(user) @ m.text.T)[:, 1:])  # exactly the text scorer
    with pytest.raises(ValueError, match="text"):
        InterestModel(ModelConfig(kind="long", item_ids=False), NUM_ITEMS)
