"""Content scores from public text and the user's own history: known values, causality, the model contract,
the shared/personal split and Opacus per-sample gradients."""

import pytest
import torch
from opacus import GradSampleModule

from shared_models.config import ModelConfig, build_config
from shared_models.config_checks import ConfigError
from shared_models.model.content import ContentScorer
from shared_models.model.interest import InterestModel

NUM_ITEMS = 40


def _onehot_text(n: int = 6) -> torch.Tensor:
    t = torch.eye(n)  # item i has text e_i; row 0 (padding) is cleared below
    t[0] = 0
    return t


def test_known_values_one_hot_text():
    """With one-hot text, horizon 1 scores exactly the last item with w; horizon 2 splits 1/sqrt(2) over two."""
    sc = ContentScorer(text=_onehot_text(), horizons=(1, 2), init_weight=1.0)
    with torch.no_grad():
        sc.weights.weight.copy_(torch.tensor([[3.0, 5.0]]))
    x = torch.tensor([[0, 2, 4]])  # (B=1, T=3), left padded
    s = sc(x)  # (1, 3, 6)
    inv = 2 ** -0.5
    assert torch.allclose(s[0, 0], torch.zeros(6))  # only padding seen: empty profile, no score
    assert torch.allclose(s[0, 1], torch.tensor([0, 0, 3 + 5, 0, 0, 0.0]))  # history [2]
    assert torch.allclose(s[0, 2], torch.tensor([0, 0, 5 * inv, 0, 3 + 5 * inv, 0]))  # history [2, 4]
    assert torch.allclose(sc.last(x), s[:, -1])


def test_profiles_are_causal():
    torch.manual_seed(0)
    sc = ContentScorer(text=torch.randn(NUM_ITEMS, 8), horizons=(1, 3, 5), init_weight=2.0)
    x = torch.randint(1, NUM_ITEMS, (2, 9))
    y = x.clone()
    y[:, 6] = (y[:, 6] % (NUM_ITEMS - 1)) + 1
    a, b = sc(x), sc(y)
    assert torch.allclose(a[:, :6], b[:, :6])  # the past does not see position 6
    assert not torch.allclose(a[:, 6], b[:, 6])


def _model(**kw) -> InterestModel:
    torch.manual_seed(0)
    cfg = ModelConfig(kind="long-short", hidden=16, max_len=12, short_len=4, num_heads=2, inner=32, dropout=0.0,
                      content=True, content_horizons=(1, 4, 12), **kw)
    return InterestModel(cfg, NUM_ITEMS, text=torch.randn(NUM_ITEMS, 8))


def test_model_adds_content_to_scores_and_shares_only_its_weights():
    m = _model().eval()
    x = torch.randint(1, NUM_ITEMS, (3, 12))
    with_content = m.full_sort_predict({"inputs": x})
    m.content.weights.weight.data.zero_()
    without = m.full_sort_predict({"inputs": x})
    m.content.weights.weight.data.fill_(2.0)
    assert torch.allclose(with_content[:, 1:] - without[:, 1:], m.content.last(x)[:, 1:], atol=1e-5)
    assert "content.weights.weight" in m.shared_state()
    assert not any(k.startswith("content.") for k in m.personal_state())
    assert not hasattr(m, "text_in")  # content alone learns no text projection


def test_content_needs_text_and_valid_horizons():
    with pytest.raises(ValueError, match="model.content"):
        InterestModel(ModelConfig(content=True), NUM_ITEMS, text=None)
    with pytest.raises(ConfigError, match="model.content_horizons"):
        build_config({"model": {"content": True, "content-horizons": [1, 99]}})


def test_opacus_per_sample_gradients_cover_content_weights_and_neural_gate():
    m, ref = _model(neural_gate=True, neural_gate_init=0.5), _model(neural_gate=True, neural_gate_init=0.5)
    ref.load_state_dict(m.state_dict())
    GradSampleModule(m, loss_reduction="mean")
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, NUM_ITEMS, (3, 12), generator=g)
    b = {"inputs": x, "targets": torch.randint(1, NUM_ITEMS, (3, 12), generator=g)}
    m.calculate_loss(b).backward()
    w = m.content.weights.weight  # GradSampleModule wraps in place: m keeps its attributes
    for i in range(3):
        ref.zero_grad()
        ref.calculate_loss({k: v[i:i + 1] for k, v in b.items()}).backward()
        assert torch.allclose(w.grad_sample[i], ref.content.weights.weight.grad, rtol=1e-4, atol=1e-6)
        assert torch.allclose(m.neural_scale.weight.grad_sample[i], ref.neural_scale.weight.grad, rtol=1e-4, atol=1e-6)


def test_torchscript_export_keeps_content_scores():
    from client.torchscript import script_module

    m = _model().eval()
    x = torch.randint(1, NUM_ITEMS, (1, 12))
    ref = m.full_sort_predict({"inputs": x}).scatter(1, x, torch.finfo(torch.float32).min)
    assert torch.allclose(script_module(m)(x), ref, atol=1e-5)


def test_neural_gate_at_zero_ranks_by_prior_and_content_while_aux_heads_train_the_encoders():
    m = _model(neural_gate=True, neural_gate_init=0.0)
    x = torch.randint(1, NUM_ITEMS, (3, 12))
    before = m.predict(x)
    with torch.no_grad():
        m.long.ln_f.weight.mul_(3.0)  # change the neural part: the fused scores must not move
    assert torch.allclose(m.predict(x), before)
    assert torch.allclose(before[:, 1:], m.content.last(x)[:, 1:], atol=1e-5)
    m.calculate_loss({"inputs": x, "targets": torch.randint(1, NUM_ITEMS, (3, 12))}).backward()
    assert m.long.ln_f.weight.grad.abs().sum() > 0  # the auxiliary heads train the encoders
    assert m.neural_scale.weight.grad.abs().sum() > 0  # and the gate gets a gradient of its own
    assert "neural_scale.weight" in m.shared_state()


def test_neural_gate_needs_a_path_that_trains_the_encoders():
    with pytest.raises(ConfigError, match="model.neural_gate_init"):
        build_config({"model": {"kind": "long", "neural-gate": True}})
    build_config({"model": {"kind": "long", "neural-gate": True, "neural-gate-init": 0.1}})


def test_scores_at_chosen_columns_equal_those_columns_of_every_position():
    torch.manual_seed(0)
    sc = ContentScorer(text=torch.randn(NUM_ITEMS, 8), horizons=(1, 3, 5), init_weight=2.0)
    x = torch.randint(0, NUM_ITEMS, (2, 9))
    cols = torch.tensor([2, 5, 8])
    assert torch.allclose(sc(x, cols), sc(x)[:, cols])
