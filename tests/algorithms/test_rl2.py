"""RL² (Duan et al. 2016; Wang et al. 2016): the recurrent policy, the trials container, GAE over a
trial, the recurrent PPO loss (Schulman et al. 2017) against an independent per-step computation
and finite differences, the learner's contract, and a learning run on navigation2d."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from algorithms.errors import NonFiniteError
from algorithms.policies import PolicySpec, params_to_vector, vector_to_params
from algorithms.rl2 import ppo as ppo_module
from algorithms.rl2.policy import RecurrentPolicy, RecurrentPolicySpec, make_recurrent_policy
from algorithms.rl2.ppo import RL2Learner, TrialBatch, chunk_batch, gae_over_trial, make_trial_batch, ppo_loss
from algorithms.rl2.spec import RL2Spec
from algorithms.rl2.trials import Trials


@pytest.fixture
def one_thread():
    """Small matrices: one thread is faster and makes a run's numbers independent of the machine's
    thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_spec(discrete: bool = False, **kw) -> RecurrentPolicySpec:
    return RecurrentPolicySpec(obs_dim=3, act_dim=2 if not discrete else 3, discrete=discrete,
                               **{"encoder_sizes": (4,), "hidden_size": 5, **kw})


def random_trials(policy: RecurrentPolicy, params, rng: np.random.Generator, *, trials: int, episodes: int,
                  max_len: int, dtype=np.float64) -> Trials:
    """Trials of random observations and rewards whose actions are drawn from ``policy`` (step by
    step, the state carried across episodes), episodes of random lengths 1..max_len; consistent
    ``prev_*`` inputs, ``dones``, ``trial_end``, ``mask``, ``episode_index``; log-probs and values
    of the drawing policy."""
    spec = policy.spec
    lengths = rng.integers(1, max_len + 1, size=(trials, episodes))
    total = lengths.sum(axis=1)
    t_max = int(total.max())
    fdt = np.dtype(dtype)
    obs = np.zeros((t_max, trials, spec.obs_dim), fdt)
    acts = np.zeros((t_max, trials), np.int64) if spec.discrete else np.zeros((t_max, trials, spec.act_dim), fdt)
    prev_a = np.zeros((t_max, trials, spec.act_dim), fdt)
    prev_r, prev_d, rew = (np.zeros((t_max, trials), fdt) for _ in range(3))
    dones, trial_end = np.zeros((t_max, trials), bool), np.zeros((t_max, trials), bool)
    mask, logp, values = (np.zeros((t_max, trials), fdt) for _ in range(3))
    ep_index = np.full((t_max, trials), -1, np.int64)
    torch_dtype = torch.float64 if fdt == np.float64 else torch.float32
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    for b in range(trials):
        state = torch.zeros(1, spec.hidden_size, dtype=torch_dtype)
        t = 0
        for n in range(episodes):
            for k in range(int(lengths[b, n])):
                obs[t, b] = rng.normal(size=spec.obs_dim)
                if t > 0:
                    prev_a[t, b] = np.eye(spec.act_dim)[acts[t - 1, b]] if spec.discrete else acts[t - 1, b]
                    prev_r[t, b], prev_d[t, b] = rew[t - 1, b], float(dones[t - 1, b])
                with torch.no_grad():
                    dist, v, state = policy.step(
                        params, torch.as_tensor(obs[t, b : b + 1]), torch.as_tensor(prev_a[t, b : b + 1]),
                        torch.as_tensor(prev_r[t, b : b + 1]), torch.as_tensor(prev_d[t, b : b + 1]), state,
                    )
                    a = policy.sample(dist, gen)
                    logp[t, b] = float(policy.log_prob(dist, a)[0])
                acts[t, b] = a[0].numpy()
                values[t, b] = float(v[0])
                rew[t, b] = rng.normal() - 0.1 * obs[t, b, 0]
                dones[t, b] = k == lengths[b, n] - 1
                trial_end[t, b] = dones[t, b] and n == episodes - 1
                mask[t, b] = 1.0
                ep_index[t, b] = n
                t += 1
    return Trials(
        obs=obs, actions=acts, prev_actions=prev_a, prev_rewards=prev_r, prev_dones=prev_d, rewards=rew,
        dones=dones, trial_end=trial_end, mask=mask, log_probs=logp, values=values,
        success=(rng.random((t_max, trials)) < 0.1).astype(fdt) * mask, episode_index=ep_index,
        initial_state=np.zeros((trials, spec.hidden_size), fdt), has_success=True,
    )


# --- the policy -----------------------------------------------------------------------------------
def gru_equations(params, x, h, hidden):
    """Cho et al. 2014's GRU, written out (nn.GRUCell's gate order: reset, update, new)."""
    gi = x @ params["gru.weight_ih"].T + params["gru.bias_ih"]
    gh = h @ params["gru.weight_hh"].T + params["gru.bias_hh"]
    r = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])
    z = torch.sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
    n = torch.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
    return (1 - z) * n + z * h


@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unroll_matches_the_gru_equations_and_step(discrete, dtype):
    """The fused unroll against the policy written out step by step (encoder, GRU equations, heads),
    and ``step`` repeated ``T`` times; to float rounding (float32: 1e-5, float64: 1e-12)."""
    spec = RecurrentPolicySpec(obs_dim=3, act_dim=4, discrete=discrete, encoder_sizes=(8, 8), hidden_size=16)
    policy = make_recurrent_policy(spec, seed=0).to(dtype)
    params = policy.params()
    g = torch.Generator().manual_seed(0)
    t, b = 7, 5
    obs = torch.randn(t, b, 3, generator=g, dtype=dtype)
    prev_a = torch.randn(t, b, 4, generator=g, dtype=dtype)
    prev_r = torch.randn(t, b, generator=g, dtype=dtype)
    prev_d = (torch.rand(t, b, generator=g) < 0.3).to(dtype)
    h0 = torch.randn(b, 16, generator=g, dtype=dtype)
    dist, values, states = policy.unroll(params, obs, prev_a, prev_r, prev_d, h0)
    assert values.shape == (t, b) and states.shape == (t + 1, b, 16) and dist[0].shape == (t, b, 4)
    assert torch.equal(states[0], h0)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-12}
    h_eq, h_step = h0, h0
    for i in range(t):
        x = torch.cat([obs[i], prev_a[i], prev_r[i, :, None], prev_d[i, :, None]], -1)
        for k in range(2):
            x = torch.tanh(x @ params[f"encoder.{k}.weight"].T + params[f"encoder.{k}.bias"])
        h_eq = gru_equations(params, x, h_eq, 16)
        torch.testing.assert_close(states[i + 1], h_eq, **tol)
        torch.testing.assert_close(dist[0][i], h_eq @ params["head.weight"].T + params["head.bias"], **tol)
        torch.testing.assert_close(values[i], (h_eq @ params["value.weight"].T + params["value.bias"])[:, 0], **tol)
        d, v, h_step = policy.step(params, obs[i], prev_a[i], prev_r[i], prev_d[i], h_step)
        torch.testing.assert_close(d[0], dist[0][i], **tol)
        torch.testing.assert_close(v, values[i], **tol)
        torch.testing.assert_close(h_step, states[i + 1], **tol)
        if not discrete:
            assert torch.equal(d[1], dist[1])  # the state-independent log_std
    # the functional form follows the given parameters, not the module's
    other = make_recurrent_policy(spec, seed=1).to(dtype).params()
    assert not torch.equal(policy.unroll(other, obs, prev_a, prev_r, prev_d, h0)[1], values)


def test_policy_spec_helpers_and_parameters():
    spec = RecurrentPolicySpec(obs_dim=2, act_dim=3, discrete=True)
    policy = make_recurrent_policy(spec, seed=0)
    assert spec.input_dim == 2 + 3 + 2 and spec.hidden_size == 128 and spec.encoder_sizes == (64,)
    assert sorted(policy.params()) == sorted([
        "encoder.0.weight", "encoder.0.bias", "gru.weight_ih", "gru.weight_hh", "gru.bias_ih", "gru.bias_hh",
        "head.weight", "head.bias", "value.weight", "value.bias",
    ])
    assert "log_std" in make_recurrent_policy(tiny_spec(), seed=0).params()
    assert torch.equal(policy.initial_state(4), torch.zeros(4, 128))
    assert torch.equal(policy.encode_action(torch.tensor([2, 0])), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    same = make_recurrent_policy(spec, seed=0).params()
    assert all(torch.equal(v, same[k]) for k, v in policy.params().items())
    for bad in ({"obs_dim": 0}, {"hidden_size": 0}, {"encoder_sizes": (0,)}, {"init_std": 0.0},
                {"activation": "gelu"}):
        with pytest.raises(ValueError):
            RecurrentPolicySpec(**{"obs_dim": 2, "act_dim": 2, "discrete": False, **bad})
    # no encoder: the GRU takes the step's input directly
    bare = make_recurrent_policy(RecurrentPolicySpec(2, 2, False, encoder_sizes=(), hidden_size=3), seed=0)
    assert bare.gru.weight_ih.shape == (9, 6)


# --- trials ---------------------------------------------------------------------------------------
def hand_trials() -> Trials:
    """Two trials of two episodes: column 0 is 2 + 2 steps, column 1 is 1 + 2 steps (one padded step)."""
    rewards = np.array([[1.0, 5.0], [2.0, -1.0], [3.0, -2.0], [4.0, 0.0]], np.float32)
    dones = np.array([[0, 1], [1, 0], [0, 1], [1, 0]], bool)
    trial_end = np.array([[0, 0], [0, 0], [0, 1], [1, 0]], bool)
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], np.float32)
    episode_index = np.array([[0, 0], [0, 1], [1, 1], [1, -1]], np.int64)
    success = np.array([[0, 0], [1, 0], [0, 0], [0, 0]], np.float32)
    t, b = rewards.shape
    z = np.zeros((t, b), np.float32)
    return Trials(
        obs=np.zeros((t, b, 2), np.float32), actions=np.zeros((t, b, 1), np.float32),
        prev_actions=np.zeros((t, b, 1), np.float32), prev_rewards=z, prev_dones=z, rewards=rewards * mask,
        dones=dones, trial_end=trial_end, mask=mask, log_probs=z, values=z, success=success,
        episode_index=episode_index, initial_state=np.zeros((b, 3), np.float32), has_success=True,
    )


def test_trials_per_episode_concatenate_select():
    tr = hand_trials()
    assert tr.episodes_per_trial == 2 and tr.num_steps == 7 and tr.num_trials == 2 and tr.horizon == 4
    np.testing.assert_array_equal(tr.returns_per_episode(), [[3.0, 7.0], [5.0, -3.0]])
    np.testing.assert_array_equal(tr.success_per_episode(), [[1.0, 0.0], [0.0, 0.0]])
    short = tr.select(slice(1, 2))
    short = Trials(**{**short.__dict__, **{k: getattr(short, k)[:3] for k in (
        "obs", "actions", "prev_actions", "prev_rewards", "prev_dones", "rewards", "dones", "trial_end", "mask",
        "log_probs", "values", "success", "episode_index")}})
    both = Trials.concatenate([short, tr])
    assert both.horizon == 4 and both.num_trials == 3 and both.initial_state.shape == (3, 3)
    assert both.episode_index[3, 0] == -1 and both.mask[3, 0] == 0
    np.testing.assert_array_equal(both.returns_per_episode(), [[5.0, -3.0], [3.0, 7.0], [5.0, -3.0]])
    with pytest.raises(ValueError, match="mask"):
        Trials(**{**tr.__dict__, "mask": tr.mask[:2]})


# --- GAE over a trial -----------------------------------------------------------------------------
def test_gae_over_trial_hand_computed():
    """γ = λ = 0.5.  Column 0: an episode ends at t=0 INSIDE the trial (no cut), the trial ends at
    t=2.  Column 1: the trial ends at t=1, t=2 is padding with a stray value 5 (must not leak).
    Column 2: no trial end within T (the value after its last step is 0).

    col 0: r = (1, 0, 2), V = (0.5, 1, 0)
        δ2 = 2 - 0 = 2;  δ1 = 0 + 0.5·0 - 1 = -1;  δ0 = 1 + 0.5·1 - 0.5 = 1
        A2 = 2;  A1 = -1 + 0.25·2 = -0.5;  A0 = 1 + 0.25·(-0.5) = 0.875
    col 1: r = (1, 1, ·), V = (2, 1, 5·)
        δ1 = 1 - 1 = 0;  δ0 = 1 + 0.5·1 - 2 = -0.5;  A1 = 0;  A0 = -0.5;  A2 = 0 (padding)
    col 2: r = (0, 0, 1), V = (1, 1, 1)
        δ2 = 1 - 1 = 0;  δ1 = 0 + 0.5 - 1 = -0.5;  δ0 = -0.5
        A2 = 0;  A1 = -0.5;  A0 = -0.5 + 0.25·(-0.5) = -0.625
    """
    rewards = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [2.0, 0.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 2.0, 1.0], [1.0, 1.0, 1.0], [0.0, 5.0, 1.0]], dtype=torch.float64)
    trial_end = torch.tensor([[0, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.bool)
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=torch.float64)
    adv = gae_over_trial(rewards, values, trial_end, mask, gamma=0.5, lam=0.5)
    expected = torch.tensor([[0.875, -0.5, -0.625], [-0.5, 0.0, -0.5], [2.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-15)
    # λ = 1, γ = 1: the advantage is the trial's return-to-go minus the value (episodes not cut)
    adv1 = gae_over_trial(rewards, values, trial_end, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv1[:, 0], torch.tensor([3.0, 2.0, 2.0], dtype=torch.float64) - values[:, 0])


# --- the PPO loss ---------------------------------------------------------------------------------
def perturbed(params, scale: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}


def loop_loss(policy, params, tr: Trials, old_logp, adv, returns, *, clip, value_coef, entropy_coef):
    """The loss trial by trial, step by step with ``policy.step`` (batch of one), in plain Python."""
    surr = value = ent = 0.0
    count = 0
    for b in range(tr.num_trials):
        h = torch.as_tensor(tr.initial_state[b : b + 1])
        for t in range(tr.horizon):
            if tr.mask[t, b] == 0:
                break
            dist, v, h = policy.step(
                params, torch.as_tensor(tr.obs[t, b : b + 1]), torch.as_tensor(tr.prev_actions[t, b : b + 1]),
                torch.as_tensor(tr.prev_rewards[t, b : b + 1]), torch.as_tensor(tr.prev_dones[t, b : b + 1]), h,
            )
            a = torch.as_tensor(tr.actions[t, b : b + 1])
            ratio = torch.exp(policy.log_prob(dist, a)[0] - old_logp[t, b])
            surr = surr + torch.minimum(ratio * adv[t, b], ratio.clamp(1 - clip, 1 + clip) * adv[t, b])
            value = value + (v[0] - returns[t, b]) ** 2
            ent = ent + policy.entropy(dist)[0]
            count += 1
    return -surr / count + value_coef * value / count - entropy_coef * ent / count


@pytest.mark.parametrize("discrete", [False, True])
def test_ppo_loss_equals_a_per_trial_loop(discrete):
    policy = make_recurrent_policy(tiny_spec(discrete), seed=0).double()
    old = policy.params()
    tr = random_trials(policy, old, np.random.default_rng(1), trials=4, episodes=3, max_len=4)
    batch = make_trial_batch([tr.select(slice(0, 2)), tr.select(slice(2, 4))], dtype=torch.float64)
    rng = torch.Generator().manual_seed(2)
    adv = torch.randn(batch.mask.shape, generator=rng, dtype=torch.float64) * batch.mask
    returns = torch.randn(batch.mask.shape, generator=rng, dtype=torch.float64) * batch.mask
    new = perturbed(old, 0.3, seed=3)
    kw = {"clip": 0.2, "value_coef": 0.7, "entropy_coef": 0.05}
    loss, stats = ppo_loss(policy, new, batch, batch.log_probs, adv, returns, **kw)
    expected = loop_loss(policy, new, tr, batch.log_probs, adv, returns, **kw)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    assert 0 < stats["clip_frac"] < 1  # the perturbation moves some ratios past the clip range
    # at the behaviour parameters every ratio is 1: the surrogate is the mean advantage
    loss0, stats0 = ppo_loss(policy, old, batch, batch.log_probs, adv, returns, clip=0.2, value_coef=0.0,
                             entropy_coef=0.0)
    torch.testing.assert_close(loss0, -(adv.sum() / batch.mask.sum()), rtol=1e-12, atol=1e-12)
    assert abs(stats0["kl"]) < 1e-12 and stats0["clip_frac"] == 0


@pytest.mark.parametrize("discrete", [False, True])
def test_ppo_loss_gradient_matches_finite_differences(discrete):
    policy = make_recurrent_policy(tiny_spec(discrete), seed=0).double()
    old = policy.params()
    tr = random_trials(policy, old, np.random.default_rng(4), trials=3, episodes=2, max_len=3)
    batch = make_trial_batch([tr], dtype=torch.float64)
    rng = torch.Generator().manual_seed(5)
    adv = torch.randn(batch.mask.shape, generator=rng, dtype=torch.float64) * batch.mask
    returns = torch.randn(batch.mask.shape, generator=rng, dtype=torch.float64) * batch.mask
    theta = params_to_vector(perturbed(old, 0.1, seed=6)).requires_grad_(True)

    def loss_of(vec):
        return ppo_loss(policy, vector_to_params(vec, old), batch, batch.log_probs, adv, returns, clip=0.2,
                        value_coef=0.5, entropy_coef=0.01)[0]

    assert torch.autograd.gradcheck(loss_of, (theta,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_chunked_bptt_loss_and_gradient_against_chunks_unrolled_one_by_one():
    """``chunk_batch``: the same loss as the whole trials (the chunks start from the states the
    whole unroll reaches), and the gradient of back-propagation truncated at the chunk boundaries,
    computed independently: each trial unrolled chunk by chunk from the detached state."""
    policy = make_recurrent_policy(tiny_spec(), seed=0).double()
    old = policy.params()
    tr = random_trials(policy, old, np.random.default_rng(7), trials=3, episodes=3, max_len=4)
    batch = make_trial_batch([tr], dtype=torch.float64)
    rng = torch.Generator().manual_seed(8)
    adv = torch.randn(batch.mask.shape, generator=rng, dtype=torch.float64) * batch.mask
    returns = torch.randn(batch.mask.shape, generator=rng, dtype=torch.float64) * batch.mask
    params = {k: v.clone().requires_grad_(True) for k, v in perturbed(old, 0.1, seed=9).items()}
    kw = {"clip": 0.2, "value_coef": 0.5, "entropy_coef": 0.01}
    chunk = 3
    with torch.no_grad():
        _, _, states = policy.unroll(params, batch.obs, batch.prev_actions, batch.prev_rewards, batch.prev_dones,
                                     batch.initial_state)
    chunked, (c_adv, c_ret) = chunk_batch(batch, states, [adv, returns], chunk)
    assert chunked.mask.shape[0] == chunk and chunked.num_trials <= 3 * math.ceil(batch.mask.shape[0] / chunk)
    assert (chunked.mask.sum(0) > 0).all() and chunked.mask.sum() == batch.mask.sum()
    loss_c, _ = ppo_loss(policy, params, chunked, chunked.log_probs, c_adv, c_ret, **kw)
    loss_w, _ = ppo_loss(policy, params, batch, batch.log_probs, adv, returns, **kw)
    torch.testing.assert_close(loss_c, loss_w, rtol=1e-10, atol=1e-12)
    grads_c = torch.autograd.grad(loss_c, list(params.values()))
    # independently: every trial, chunk by chunk, from the detached state where the chunk starts
    total = torch.zeros((), dtype=torch.float64)
    count = batch.mask.sum()
    for b in range(batch.mask.shape[1]):
        for s0 in range(0, batch.mask.shape[0], chunk):
            sl = slice(s0, s0 + chunk)
            m = batch.mask[sl, b : b + 1]
            if m.sum() == 0:
                continue
            dist, values, _ = policy.unroll(params, batch.obs[sl, b : b + 1], batch.prev_actions[sl, b : b + 1],
                                            batch.prev_rewards[sl, b : b + 1], batch.prev_dones[sl, b : b + 1],
                                            states[s0, b : b + 1].detach())
            ratio = torch.exp(policy.log_prob(dist, batch.actions[sl, b : b + 1]) - batch.log_probs[sl, b : b + 1])
            a = adv[sl, b : b + 1]
            surr = torch.minimum(ratio * a, ratio.clamp(0.8, 1.2) * a)
            term = -surr + 0.5 * (values - returns[sl, b : b + 1]) ** 2 - 0.01 * policy.entropy(dist)
            total = total + (term * m).sum()
    grads_i = torch.autograd.grad(total / count, list(params.values()))
    for k, gc, gi in zip(params, grads_c, grads_i, strict=True):
        torch.testing.assert_close(gc, gi, rtol=1e-9, atol=1e-12, msg=k)
    # and it is not the whole-trial gradient (the truncation is real)
    grads_w = torch.autograd.grad(loss_w, list(params.values()))
    assert any(not torch.allclose(gc, gw) for gc, gw in zip(grads_c, grads_w, strict=True))


def test_reward_scale_scales_the_value_targets_not_the_logged_returns():
    learner, trials = learner_and_trials()
    scaled, _ = learner_and_trials(reward_scale=0.01)
    batch = make_trial_batch(trials)
    adv, returns = learner.advantages(batch)
    adv_s, returns_s = scaled.advantages(batch)
    # with zero stored values the returns are the discounted rewards-to-go: scaled by the factor
    zero = TrialBatch(**{**batch.__dict__, "values": torch.zeros_like(batch.values)})
    torch.testing.assert_close(scaled.advantages(zero)[1], 0.01 * learner.advantages(zero)[1])
    assert not torch.allclose(returns_s, returns)
    metrics = scaled.learn([trials])
    assert metrics["meta/return_last_episode"] == pytest.approx(Trials.concatenate(trials).returns_per_episode()[:, -1]
                                                                .mean())


def test_learner_with_bptt_chunks_updates_and_checkpoints():
    learner, trials = learner_and_trials(bptt_chunk=2)
    before = learner.params
    metrics = learner.learn([trials])
    assert np.isfinite(metrics["loss/policy"]) and learner.iteration == 1
    assert any(not torch.equal(v, before[k]) for k, v in learner.params.items())


# --- the learner ----------------------------------------------------------------------------------
def learner_and_trials(seed: int = 0, **spec_kw):
    spec = RL2Spec(hidden_size=5, encoder_sizes=(4,), epochs=2, minibatches=2, **spec_kw)
    learner = RL2Learner(tiny_spec(), spec, seed=seed)
    rng = np.random.default_rng(seed)
    trials = [random_trials(learner.policy, learner.params, rng, trials=3, episodes=2, max_len=5, dtype=np.float32)
              for _ in range(2)]
    return learner, trials


def test_learner_update_metrics_and_checkpoint():
    learner, trials = learner_and_trials()
    before = learner.params
    metrics = learner.learn([trials])
    assert learner.iteration == 1
    assert any(not torch.equal(v, before[k]) for k, v in learner.params.items())
    for key in ("loss/policy", "loss/value", "loss/entropy", "meta/kl", "meta/return_first_episode",
                "meta/return_last_episode", "meta/success_last_episode", "meta/return_episode1"):
        assert np.isfinite(metrics[key]), key
    both = Trials.concatenate(trials).returns_per_episode()
    assert metrics["meta/return_last_episode"] == pytest.approx(both[:, -1].mean())
    state = learner.state_dict()
    assert state.algorithm == "rl2" and state.iteration == 1 and state.policy_spec == learner.policy.spec
    other = RL2Learner(tiny_spec(), learner.config, seed=9)
    other.load_state_dict(state)
    assert all(torch.equal(v, learner.params[k]) for k, v in other.params.items())
    assert other.iteration == 1 and other._optimizer.state_dict()["state"].keys() == state.optimizer["state"].keys()
    # a job's MLP policy spec gives the recurrent policy of the RL² spec's sizes
    from_mlp = RL2Learner(PolicySpec(obs_dim=3, act_dim=2), RL2Spec(hidden_size=7, encoder_sizes=(6,)))
    assert from_mlp.policy.spec == RecurrentPolicySpec(3, 2, False, encoder_sizes=(6,), hidden_size=7)
    with pytest.raises(ValueError, match="hidden_size"):
        RL2Learner(tiny_spec(), RL2Spec())


def test_learner_rejects_non_finite_and_keeps_its_state(monkeypatch):
    learner, trials = learner_and_trials()
    learner.learn([trials])
    params = learner.params
    optimizer = learner._optimizer.state_dict()
    steps = {k: int(v["step"]) for k, v in optimizer["state"].items()}
    bad = Trials(**{**trials[0].__dict__, "rewards": np.where(trials[0].mask > 0, np.nan, 0.0).astype(np.float32)})
    with pytest.raises(NonFiniteError, match="rewards"):
        learner.learn([[bad, trials[1]]])
    # a loss that turns NaN after two updates: both are undone, the optimizer's state too
    real, calls = ppo_module.ppo_loss, []

    def flaky(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), stats

    monkeypatch.setattr(ppo_module, "ppo_loss", flaky)
    with pytest.raises(NonFiniteError, match="loss"):
        learner.learn([trials])
    assert len(calls) == 3
    assert all(torch.equal(v, params[k]) for k, v in learner.params.items())
    after = learner._optimizer.state_dict()["state"]
    assert {k: int(v["step"]) for k, v in after.items()} == steps
    assert learner.iteration == 1


def test_spec_defaults_and_bounds():
    spec = RL2Spec()
    assert (spec.name, spec.episodes_per_trial, spec.hidden_size, spec.encoder_sizes) == ("rl2", 2, 128, (64,))
    assert (spec.lr, spec.clip, spec.epochs, spec.minibatches, spec.value_coef, spec.entropy_coef,
            spec.max_grad_norm, spec.gamma, spec.gae_lambda) == (3e-4, 0.2, 5, 4, 0.5, 0.0, 0.5, 0.99, 0.95)
    for bad in ({"episodes_per_trial": 0}, {"clip": 1.0}, {"encoder_sizes": (0,)}, {"gamma": 1.5}, {"lr": 0},
                {"unknown": 1}):
        with pytest.raises(ValidationError):
            RL2Spec(**bad)
    # the gradient-based algorithms' settings are refused by name
    for name in ("inner_lr", "inner_steps", "first_order"):
        with pytest.raises(ValidationError, match=f"{name}: RL² adapts in its recurrent policy's hidden state"):
            RL2Spec.model_validate({name: 1})


def test_trial_batch_select_cuts_to_the_longest_selected():
    learner, trials = learner_and_trials()
    batch: TrialBatch = make_trial_batch(trials)
    lengths = batch.mask.sum(0)
    cols = torch.argsort(lengths)[:2]
    sub = batch.select(cols)
    assert sub.mask.shape == (int(lengths[cols].max()), 2) and sub.initial_state.shape == (2, 5)


# --- learning -------------------------------------------------------------------------------------
def test_rl2_learns_navigation2d(one_thread):
    """TrialSampler + RL2Learner in process on navigation2d (action bound 1, the presets'; horizon
    20; 2 episodes per trial; 10 tasks x 4 trials per iteration), GRU 32 after a 32-wide encoder,
    lr 3e-3, γ = 0.9, max_grad_norm 10, seed 0, 100 iterations, one torch thread.

    Measured (this machine, one thread, 8-11 s): the mean return of the LAST episode of a trial
    went from -9.3 over the first 20 iterations to -4.3 over the last 20, and by then the last
    episode beats the first by 1.3 (the policy uses what it saw in episode one: the adaptation
    RL² learns).  Seeds 1 and 2 (same script): -8.9 -> -3.9 (gap 0.9) and -9.2 -> -3.5 (gap 1.3).
    The learning starts late (about iteration 60-75), hence 100 iterations.  With γ = 0.99 (the
    spec's default) the same setup moved only from -9.7 to -9.3 in 40 iterations (γ = 0.9: -7.5):
    with returns-to-go near -20 the value head cannot catch up at this budget.
    """
    from workers.envs import make_family
    from workers.trial_sampler import TrialSampler

    start = time.perf_counter()
    family = make_family("navigation2d", action_bound=1.0, max_episode_steps=20)
    spec = RL2Spec(hidden_size=32, encoder_sizes=(32,), lr=3e-3, max_grad_norm=10.0, gamma=0.9)
    obs_dim, act_dim, discrete = family.policy_dims()
    learner = RL2Learner(PolicySpec(obs_dim=obs_dim, act_dim=act_dim, discrete=discrete), spec, seed=0)
    sampler = TrialSampler(family, learner.policy.spec, trials_per_task=4, seed=0)
    rng = np.random.default_rng(0)
    first, last = [], []
    for _ in range(100):
        trials = sampler.sample(family.sample_tasks(10, rng), learner.params,
                                episodes_per_trial=spec.episodes_per_trial)
        metrics = learner.learn([trials])
        first.append(metrics["meta/return_first_episode"])
        last.append(metrics["meta/return_last_episode"])
    early, late = float(np.mean(last[:20])), float(np.mean(last[-20:]))
    gap = float(np.mean(last[-20:]) - np.mean(first[-20:]))
    print(f"last-episode return: first 20 iterations {early:.2f}, last 20 {late:.2f}; last - first episode "
          f"at the end {gap:.2f}; {time.perf_counter() - start:.1f} s")
    assert late > early + 3.0, (early, late)
    assert gap > 0.3, gap
