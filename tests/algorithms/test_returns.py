import numpy as np
import torch

from algorithms import baseline
from algorithms.returns import discounted_returns, gae, normalize


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_discounted_returns_hand_computed_with_episode_end_inside_column():
    # one column, episode ends at t=1, a new one runs t=2..3
    r = t([[1.0], [2.0], [3.0], [4.0]])
    d = t([[0.0], [1.0], [0.0], [0.0]])
    g = 0.5
    out = discounted_returns(r, d, gamma=g)
    expected = [[1 + 0.5 * 2], [2.0], [3 + 0.5 * 4], [4.0]]
    assert torch.allclose(out, t(expected))


def test_gae_hand_computed_with_dones_and_bootstrap():
    r = t([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    v = t([[0.5, 0.1], [0.2, 0.3], [0.4, 0.6]])
    d = t([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    last = t([0.0, 0.7])
    g, lam = 0.9, 0.8
    out = gae(r, v, d, gamma=g, gae_lambda=lam, last_values=last)
    # column 0: episode ends at t=1 (no bootstrap), new episode at t=2 bootstraps last=0.0
    d2 = 2.0 + g * 0.0 - 0.4
    d1 = 0.0 - 0.2
    d0 = 1.0 + g * 0.2 - 0.5
    c0 = [d0 + g * lam * d1, d1, d2]
    # column 1: no end, bootstraps 0.7 at the end
    e2 = 1.0 + g * 0.7 - 0.6
    e1 = 1.0 + g * 0.6 - 0.3
    e0 = 0.0 + g * 0.3 - 0.1
    c1 = [e0 + g * lam * (e1 + g * lam * e2), e1 + g * lam * e2, e2]
    assert torch.allclose(out, t(np.stack([c0, c1], axis=1).tolist()))


def test_gae_with_lambda_one_and_zero_values_is_discounted_return():
    rng = np.random.default_rng(0)
    r = t(rng.normal(size=(7, 3)).tolist())
    d = torch.zeros(7, 3, dtype=torch.float64)
    d[3, 1] = 1.0
    out = gae(r, torch.zeros_like(r), d, gamma=0.95, gae_lambda=1.0)
    assert torch.allclose(out, discounted_returns(r, d, gamma=0.95))


def test_normalize_respects_mask():
    x = t([[1.0, 2.0, 3.0, 100.0]])
    m = t([[1.0, 1.0, 1.0, 0.0]])
    out = normalize(x, m)
    assert out[0, 3] == 0
    assert abs(out[0, :3].mean()) < 1e-9
    assert abs(out[0, :3].std(unbiased=False) - 1.0) < 1e-6


def test_linear_baseline_features_and_exact_fit():
    rng = np.random.default_rng(1)
    n, horizon, b, d = 2, 6, 3, 2
    obs = torch.tensor(rng.normal(size=(n, horizon, b, d)))
    mask = torch.ones(n, horizon, b, dtype=torch.float64)
    mask[:, 4:, 0] = 0
    feats = baseline.features(obs, mask)
    assert feats.shape == (n, horizon, b, 2 * d + 4)
    # t=2 -> al=0.02; features [o, o^2, al, al^2, al^3, 1]
    o = obs[0, 2, 1]
    expected = torch.cat([o, o * o, torch.tensor([0.02, 0.02**2, 0.02**3, 1.0], dtype=torch.float64)])
    assert torch.allclose(feats[0, 2, 1], expected)
    assert feats[0, 5, 0].abs().sum() == 0  # padding
    w_true = torch.tensor(rng.normal(size=(n, 2 * d + 4)))
    targets = baseline.predict(feats, w_true)
    w = baseline.fit(feats, targets, mask, reg_coeff=1e-12)
    assert torch.allclose(baseline.predict(feats, w), targets, atol=1e-6)


def test_baseline_time_feature_restarts_after_done():
    obs = torch.zeros(1, 4, 1, 1, dtype=torch.float64)
    mask = torch.ones(1, 4, 1, dtype=torch.float64)
    dones = torch.tensor([[[0.0], [1.0], [0.0], [0.0]]], dtype=torch.float64)
    feats = baseline.features(obs, mask, dones)
    assert torch.allclose(feats[0, :, 0, 2] * 100, torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64))
