"""The supervised meta-learners (sl-maml, anil, meta-sgd, sl-reptile, protonet, matching) against
independent computations, on synthetic episodes made here (float64 where the math is compared)."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from algorithms import registry
from algorithms.errors import NonFiniteError
from algorithms.learned_opt.learner import LSTMOptimizerLearner
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.learner import make_episode_batch, task_loss
from algorithms.supervised.maml_learner import ANIL, SLMAML, MetaSGD
from algorithms.supervised.matching_learner import (
    MatchingNetworks,
    attention,
    fce_query,
    fce_support,
    lstm_cell,
    matching_log_probs,
)
from algorithms.supervised.meta_lstm_learner import MetaLSTM
from algorithms.supervised.nets import NetSpec, make_net, net_spec_for
from algorithms.supervised.protonet_learner import ProtoNet, prototype_logits, prototypes
from algorithms.supervised.reptile_learner import SLReptile, reptile_update
from algorithms.supervised.specs import episode_plan
from tests.algorithms.helpers import noisy_classes

ROOT = Path(__file__).resolve().parents[2]
SUPERVISED = ("sl-maml", "anil", "meta-sgd", "sl-reptile", "protonet", "matching", "meta-lstm", "lstm-optimizer")


pytestmark = pytest.mark.usefixtures("one_thread")


# --- synthetic episodes -------------------------------------------------------------------------
def classification_episodes(rng: np.random.Generator, *, tasks: int = 3, ways: int = 3, shots: int = 2,
                            queries: int = 2, shape: tuple[int, ...] = (4,)) -> list[SupportQuery]:
    """Random inputs with class-dependent means (so there is something to learn)."""
    out = []
    for _ in range(tasks):
        means = rng.normal(size=(ways, *shape))

        def draw(k: int, means: np.ndarray = means) -> tuple[np.ndarray, np.ndarray]:
            y = np.repeat(np.arange(ways), k)
            x = means[y] + 0.5 * rng.normal(size=(len(y), *shape))
            return x.astype(np.float32), y.astype(np.int64)

        out.append(SupportQuery(*draw(shots), *draw(queries)))
    return out


def sinusoid_episodes(rng: np.random.Generator, n: int, *, shots: int = 10) -> list[SupportQuery]:
    """Finn et al. (2017, sec. 5.1)'s sinusoid regression: amplitude U[0.1, 5], phase U[0, π],
    inputs U[-5, 5], ``y = A sin(x − φ)``; ``shots`` support and ``shots`` query points."""
    out = []
    for _ in range(n):
        amplitude, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, np.pi)
        x = rng.uniform(-5.0, 5.0, size=(2 * shots, 1)).astype(np.float32)
        y = (amplitude * np.sin(x - phase)).astype(np.float32)
        out.append(SupportQuery(x[:shots], y[:shots], x[shots:], y[shots:]))
    return out


def f64(params: dict[str, torch.Tensor], *, requires_grad: bool = True) -> dict[str, torch.Tensor]:
    return {k: v.detach().double().requires_grad_(requires_grad) for k, v in params.items()}


def perturbed(params: dict[str, torch.Tensor], seed: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """``params`` plus noise: away from the initialisation's zero biases, so every term matters."""
    gen = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# --- networks -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "channels", "feature_map"), [
    ((1, 8, 8), 64, (64, 1, 1)),     # 8, 4, 2, 1, 1 with ceil-mode pooling (floor would reach 0)
    ((8, 8), 16, (16, 1, 1)),        # (H, W): one channel
    ((1, 28, 28), 64, (64, 1, 1)),   # Omniglot: 28, 14, 7, 3, 1
    ((3, 84, 84), 32, (32, 5, 5)),   # mini-ImageNet: 84, 42, 21, 10, 5 (Finn et al.'s 800 features)
])
def test_conv4_shapes(shape, channels, feature_map):
    spec = NetSpec(input_shape=shape, output_dim=5, kind="conv4", channels=channels)
    assert spec.feature_map() == feature_map and spec.embedding_dim == int(np.prod(feature_map))
    net = make_net(spec, seed=0)
    params = dict(net.named_parameters())
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        assert net.embed(params, x).shape == (2, 3, spec.embedding_dim)
        out = net(params, x)
        assert out.shape == (2, 3, 5) and torch.isfinite(out).all()
        # transductive batch norm: each task's batch is normalised by its own statistics
        assert torch.allclose(out[1], net(params, x[1]), atol=1e-5)


def test_mlp_is_finns_sinusoid_network():
    net = make_net(NetSpec(input_shape=(1,), output_dim=1), seed=0)
    shapes = {k: tuple(v.shape) for k, v in net.named_parameters()}
    assert shapes == {"body.0.weight": (40, 1), "body.0.bias": (40,), "body.1.weight": (40, 40),
                      "body.1.bias": (40,), "head.weight": (1, 40), "head.bias": (1,)}
    with pytest.raises(ValueError, match="conv4"):
        NetSpec(input_shape=(4,), output_dim=2, kind="conv4")
    assert net_spec_for((1, 28, 28), 5) == NetSpec(input_shape=(1, 28, 28), output_dim=5, kind="conv4")
    assert net_spec_for((1,), 1) == NetSpec(input_shape=(1,), output_dim=1)


# --- MAML ---------------------------------------------------------------------------------------
def maml_problem(*, classification: bool, inner_lr: float = 0.5, seed: int = 0):
    """A tiny tanh MLP (smooth: finite differences are exact to O(h²)) and a float64 batch."""
    rng = np.random.default_rng(seed)
    if classification:
        spec = NetSpec(input_shape=(2,), output_dim=3, hidden_sizes=(4,), activation="tanh")
        episodes = classification_episodes(rng, tasks=3, ways=3, shots=2, queries=2, shape=(2,))
    else:
        spec = NetSpec(input_shape=(1,), output_dim=1, hidden_sizes=(4,), activation="tanh")
        episodes = sinusoid_episodes(rng, 3, shots=4)
    learner = SLMAML(spec, registry.get("sl-maml").spec(inner_lr=inner_lr), seed=seed)
    batch = make_episode_batch(episodes, spec=spec, dtype=torch.float64)
    return learner, batch, f64(perturbed(learner.params, seed))


@pytest.mark.parametrize("task_batching", ["loop", "vmap"])
@pytest.mark.parametrize("classification", [True, False])
def test_sl_maml_second_order_meta_gradient_matches_finite_differences(task_batching, classification):
    """Two second-order inner steps (α = 0.5), tanh MLP, float64: the autograd meta-gradient of
    both task batchings against central differences of the meta-objective."""
    learner, batch, theta = maml_problem(classification=classification)

    def loss(th, **kw):
        return learner.outer_loss(th, batch, task_batching=task_batching, steps=2, **kw)[0]

    grads = torch.autograd.grad(loss(theta), list(theta.values()))
    h = 1e-6
    for (name, p), g in zip(theta.items(), grads, strict=True):
        fd = torch.zeros_like(p).detach()
        for i in range(p.numel()):
            plus, minus = dict(theta), dict(theta)
            e = torch.zeros(p.numel(), dtype=p.dtype)
            e[i] = h
            plus[name], minus[name] = p + e.view_as(p), p - e.view_as(p)  # in θ's graph: the inner loop needs it
            fd.view(-1)[i] = float((loss(plus) - loss(minus)).detach()) / (2 * h)
        assert rel_err(g, fd) < 1e-6, name
    # the test can tell: the first-order gradient is another one
    fo = torch.autograd.grad(loss(theta, first_order=True), list(theta.values()))
    assert rel_err(torch.cat([g.flatten() for g in fo]), torch.cat([g.flatten() for g in grads])) > 1e-3


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("cls", [SLMAML, ANIL, MetaSGD])
def test_vmap_path_equals_loop_path(cls, first_order):
    """Loss, query outputs and meta-gradient (θ and the step sizes) of the two task batchings, on
    a conv4 with transductive batch norm, two inner steps (Meta-SGD: one), and a whole update."""
    rng = np.random.default_rng(1)
    # 12×12 (12, 6, 3, 2, 1 with ceil pooling): on 8×8 the third block's batch-norm shift has an
    # exactly zero gradient (the last block's 1×1 map is normalised over the batch), which Adam's
    # first step would turn into ±lr of rounding noise in the whole-update comparison below
    spec = NetSpec(input_shape=(1, 12, 12), output_dim=3, kind="conv4", channels=3)
    name = cls.name
    learner = cls(spec, registry.get(name).spec(inner_lr=0.3, first_order=first_order), seed=0)
    episodes = classification_episodes(rng, tasks=3, ways=3, shots=2, queries=2, shape=(1, 12, 12))
    batch = make_episode_batch(episodes, spec=spec, dtype=torch.float64)
    theta = f64(perturbed(learner.params, 2, scale=0.1))
    lr = {k: torch.full_like(theta[k], 0.3).requires_grad_(True) for k in learner.inner_keys()}
    steps = 1 if cls is MetaSGD else 2
    results = {}
    for mode in ("loop", "vmap"):
        loss, out = learner.outer_loss(theta, batch, lr=lr, task_batching=mode, steps=steps)
        grads = torch.autograd.grad(loss, [*theta.values(), *lr.values()])
        results[mode] = (loss, out, torch.cat([g.flatten() for g in grads]))
    (l0, o0, g0), (l1, o1, g1) = results["loop"], results["vmap"]
    assert abs(float((l0 - l1).detach())) < 1e-12 and float((o0 - o1).detach().abs().max()) < 1e-10
    assert rel_err(g1, g0) < 1e-10 and float(g0.norm()) > 0
    # and a whole update: the same new θ (float64: Adam's first step is ±lr wherever a gradient is
    # near 0, so float32 rounding could flip a sign between the two paths)
    learners = []
    for mode in ("loop", "vmap"):
        learner = cls(spec, registry.get(name).spec(inner_lr=0.3, task_batching=mode), seed=0)
        learner.policy.double()
        if isinstance(learner, MetaSGD):
            learner.alpha.double()
        learners.append((learner, learner.learn([episodes])))
    (a, ma), (b, mb) = learners
    assert abs(ma["loss/query"] - mb["loss/query"]) < 1e-12
    for k in a.params:
        assert torch.allclose(a.params[k], b.params[k], atol=1e-12), k


def test_anil_adapts_only_the_head():
    rng = np.random.default_rng(2)
    spec = NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(8,), activation="tanh")
    learner = ANIL(spec, registry.get("anil").spec(inner_lr=0.5), seed=0)
    assert learner.inner_keys() == ["head.weight", "head.bias"]
    episode = classification_episodes(rng, tasks=1)[0]
    theta = learner.params
    adapted = learner.adapt_task(theta, episode, steps=3)
    assert all(torch.equal(adapted[k], theta[k]) for k in theta if not k.startswith("head."))
    assert all(not torch.equal(adapted[k], theta[k]) for k in ("head.weight", "head.bias"))
    # = three SGD steps on the head alone over the frozen encoder's embedding of the support set
    xs, ys = torch.as_tensor(episode.x_support), torch.as_tensor(episode.y_support)
    feats = learner.net.embed(theta, xs)
    w, b = theta["head.weight"].clone().requires_grad_(True), theta["head.bias"].clone().requires_grad_(True)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(feats @ w.T + b, ys)
        gw, gb = torch.autograd.grad(loss, [w, b])
        w, b = w - 0.5 * gw, b - 0.5 * gb
    assert torch.allclose(adapted["head.weight"], w, atol=1e-6) and torch.allclose(adapted["head.bias"], b, atol=1e-6)
    # the encoder still learns, through the head's adaptation (outer step only)
    batch = make_episode_batch(classification_episodes(rng), spec=spec, dtype=torch.float64)
    th = f64(perturbed(theta, 3))
    grads = dict(zip(th, torch.autograd.grad(learner.outer_loss(th, batch)[0], list(th.values())), strict=True))
    assert float(grads["body.0.weight"].norm()) > 0


def test_meta_sgd_inner_step_and_alpha_gradients():
    rng = np.random.default_rng(3)
    spec = NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(8,), activation="tanh")
    learner = MetaSGD(spec, registry.get("meta-sgd").spec(inner_lr=0.05), seed=0)
    assert all(torch.all(a == 0.05) for a in learner.step_sizes().values())
    with torch.no_grad():  # per-entry step sizes, so ⊙ is tested, not a scalar
        for k, a in learner.alpha.items():
            a.copy_(torch.rand(a.shape, generator=torch.Generator().manual_seed(len(k))) * 0.2)
    episode = classification_episodes(rng, tasks=1)[0]
    theta = learner.params
    adapted = learner.adapt_task(theta, episode)  # one step by default
    th = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    loss = torch.nn.functional.cross_entropy(learner.net(th, torch.as_tensor(episode.x_support)),
                                             torch.as_tensor(episode.y_support))
    grads = dict(zip(th, torch.autograd.grad(loss, list(th.values())), strict=True))
    alpha = learner.step_sizes()
    for k in theta:
        assert torch.allclose(adapted[k], theta[k] - alpha[k].detach() * grads[k], atol=1e-6), k
    # α is a meta-parameter: it has a gradient and the outer step moves it
    before = {k: v.detach().clone() for k, v in learner.alpha.items()}
    episodes = classification_episodes(rng)
    batch = learner.batch(episodes)
    g_alpha = torch.autograd.grad(learner.outer_loss(dict(learner.policy.named_parameters()), batch)[0],
                                  list(learner.alpha.values()))
    assert all(torch.isfinite(g).all() for g in g_alpha) and sum(float(g.norm()) for g in g_alpha) > 0
    learner.learn([episodes])
    assert all(not torch.equal(before[k], learner.alpha[k]) for k in before)


# --- Reptile ------------------------------------------------------------------------------------
@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_reptile_update_is_theta_plus_eps_mean_of_phi_minus_theta(inner_optimizer):
    rng = np.random.default_rng(4)
    spec = NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(8,), activation="tanh")
    cfg = registry.get("sl-reptile").spec(inner_optimizer=inner_optimizer, inner_lr=0.05, inner_steps=3,
                                          outer_lr=0.3)
    learner = SLReptile(spec, cfg, seed=0)
    episodes = classification_episodes(rng)
    theta = learner.params
    phis = []
    for e in episodes:  # the reference: torch.optim on each task's support ∪ query
        p = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        opt = (torch.optim.SGD(p.values(), lr=0.05) if inner_optimizer == "sgd"
               else torch.optim.Adam(p.values(), lr=0.05, betas=(0.0, 0.999), eps=1e-8))
        x = torch.as_tensor(np.concatenate([e.x_support, e.x_query]))
        y = torch.as_tensor(np.concatenate([e.y_support, e.y_query]))
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(learner.net(p, x), y).backward()
            opt.step()
        phis.append({k: v.detach() for k, v in p.items()})
    learner.learn([episodes])
    for k in theta:
        expected = theta[k] + 0.3 * torch.stack([phi[k] - theta[k] for phi in phis]).mean(0)
        assert torch.allclose(learner.params[k], expected, atol=1e-6), k
    stacked = {k: torch.stack([phi[k] for phi in phis]) for k in theta}
    assert all(torch.allclose(reptile_update(theta, stacked, outer_lr=0.3)[k], learner.params[k], atol=1e-6)
               for k in theta)


# --- ProtoNets ----------------------------------------------------------------------------------
def test_protonet_logits_against_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    ways, d = 3, 5
    support_y = torch.tensor([0, 1, 2, 2, 0, 1, 1])
    support, query = torch.randn(7, d, generator=gen), torch.randn(4, d, generator=gen)
    logits = prototype_logits(query, prototypes(support, support_y, ways))
    for j in range(4):
        for k in range(ways):
            members = [support[i] for i in range(7) if support_y[i] == k]
            c = sum(members) / len(members)
            assert abs(float(logits[j, k]) + sum(float(query[j, m] - c[m]) ** 2 for m in range(d))) < 1e-5
    with pytest.raises(ValueError, match="support example"):
        prototypes(support, torch.tensor([0, 0, 1, 1, 0, 1, 0]), ways)
    # the learner: embeddings of the network, and the adapted model's linear head (Snell et al.
    # sec. 2.4) gives the same softmax
    rng = np.random.default_rng(5)
    spec = NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(8,))
    learner = ProtoNet(spec, seed=0)
    episode = classification_episodes(rng, tasks=1)[0]
    theta = learner.params
    xs, xq = torch.as_tensor(episode.x_support), torch.as_tensor(episode.x_query)
    with torch.no_grad():
        hand = prototype_logits(learner.net.embed(theta, xq),
                                prototypes(learner.net.embed(theta, xs), torch.as_tensor(episode.y_support), 3))
        assert torch.allclose(learner.logits(theta, learner.batch([episode]))[0], hand, atol=1e-5)
    linear = learner.predict(learner.adapt_task(theta, episode), xq)
    assert torch.allclose(torch.softmax(linear, -1), torch.softmax(hand, -1), atol=1e-5)
    with pytest.raises(ValueError, match="adapt_task"):
        learner.predict(theta, xq)


# --- Matching Networks --------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_matching_attention_against_a_hand_computation(scale):
    gen = torch.Generator().manual_seed(1)
    ways, d = 3, 4
    support_y = torch.tensor([0, 1, 2, 1, 0])
    support, query = torch.randn(5, d, generator=gen), torch.randn(2, d, generator=gen)
    a = attention(query, support, scale=scale)
    logp = matching_log_probs(query, support, torch.nn.functional.one_hot(support_y, ways).float(), scale=scale)
    for j in range(2):
        cos = [float(query[j] @ support[i] / (query[j].norm() * support[i].norm())) for i in range(5)]
        z = sum(np.exp(scale * c) for c in cos)
        weights = [np.exp(scale * c) / z for c in cos]
        for i in range(5):
            assert abs(float(a[j, i]) - weights[i]) < 1e-6
        for k in range(ways):
            p = sum(w for w, y in zip(weights, support_y.tolist(), strict=True) if y == k)
            assert abs(float(logp[j, k].exp()) - p) < 1e-6


def test_matching_fce_pieces():
    gen = torch.Generator().manual_seed(2)
    cell = torch.nn.LSTMCell(4, 3)
    params = {f"c.{k}": v for k, v in cell.named_parameters()}
    x, h, c = torch.randn(5, 4, generator=gen), torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    with torch.no_grad():
        ours, theirs = lstm_cell(params, "c.", x, h, c), cell(x, (h, c))
    assert torch.allclose(ours[0], theirs[0], atol=1e-6) and torch.allclose(ours[1], theirs[1], atol=1e-6)
    # the full-context embeddings: shapes, and the meta-test path (adapt, predict) equals training's
    rng = np.random.default_rng(6)
    spec = NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(6,))
    learner = MatchingNetworks(spec, registry.get("matching").spec(fce=True, fce_steps=3), seed=0)
    assert {k.split(".")[0] for k in learner.params} == {"encoder", "fce_forward", "fce_backward", "fce_query"}
    episode = classification_episodes(rng, tasks=1)[0]
    theta = learner.params
    with torch.no_grad():
        g = fce_support(theta, torch.randn(2, 6, 6, generator=gen))
        assert g.shape == (2, 6, 6)
        assert fce_query(theta, torch.randn(2, 4, 6, generator=gen), g, steps=3).shape == (2, 4, 6)
        train = learner.log_probs(theta, learner.batch([episode]))[0]
    test = learner.predict(learner.adapt_task(theta, episode), torch.as_tensor(episode.x_query))
    assert torch.allclose(train, test, atol=1e-6)
    assert torch.allclose(test.exp().sum(-1), torch.ones(len(test)), atol=1e-5)


# --- every learner: checkpoints, non-finite updates, meta-test, registration -------------------
def make(name: str, *, seed: int = 0, spec: NetSpec | None = None, **overrides):
    spec = spec or NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(8,))
    return registry.make_learner(registry.get(name).spec(**overrides), spec, seed=seed)


CASES = [(n, {}) for n in SUPERVISED] + [("matching", {"fce": True})]


def snapshot(learner):
    state = learner.state_dict()
    return ({k: v.clone() for k, v in state.params.items()}, copy.deepcopy(state.optimizer), state.iteration)


def assert_same_state(a, b):
    pa, oa, ia = a
    pb, ob, ib = b
    assert ia == ib and pa.keys() == pb.keys()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert (oa is None) == (ob is None)
    if oa is not None:
        assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
        for i, s in oa["state"].items():
            assert all(torch.equal(v, ob["state"][i][key]) for key, v in s.items())


@pytest.mark.parametrize(("name", "overrides"), CASES)
def test_checkpoints_round_trip(name, overrides):
    rng = np.random.default_rng(7)
    a = make(name, **overrides)
    first, second = classification_episodes(rng), classification_episodes(rng)
    a.learn([first])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    assert state.algorithm == name and state.policy_spec == a.net_spec and state.iteration == 1
    b = make(name, seed=1, **overrides)
    b.load_state_dict(state)
    assert_same_state(snapshot(a), snapshot(b))
    a.learn([second])
    b.learn([second])
    assert_same_state(snapshot(a), snapshot(b))
    other = "protonet" if name != "protonet" else "matching"
    with pytest.raises(ValueError, match="checkpoint is for"):
        make(other).load_state_dict(state)


@pytest.mark.parametrize(("name", "overrides"), CASES)
def test_non_finite_updates_are_rejected_with_the_state_unchanged(name, overrides, monkeypatch):
    rng = np.random.default_rng(8)
    learner = make(name, **overrides)
    learner.learn([classification_episodes(rng)])  # an optimizer state to keep
    before = snapshot(learner)
    bad = classification_episodes(rng)
    bad[1] = SupportQuery(bad[1].x_support, bad[1].y_support, np.full_like(bad[1].x_query, np.nan),
                          bad[1].y_query)
    with pytest.raises(NonFiniteError, match="not finite"):
        learner.learn([bad])
    assert_same_state(before, snapshot(learner))
    # a NaN made inside the computation (finite inputs)
    embed = learner.net.embed
    monkeypatch.setattr(learner.net, "embed", lambda p, x: embed(p, x) * float("nan"))
    with pytest.raises(NonFiniteError, match="not finite"):
        learner.learn([classification_episodes(rng)])
    assert_same_state(before, snapshot(learner))


def test_overflowing_regression_is_rejected():
    """Finite inputs whose loss overflows float32: rejected, θ and Adam's state unchanged."""
    rng = np.random.default_rng(9)
    learner = make("sl-maml", spec=NetSpec(input_shape=(1,), output_dim=1))
    learner.learn([sinusoid_episodes(rng, 4)])
    before = snapshot(learner)
    bad = [SupportQuery(e.x_support, e.y_support * 1e30, e.x_query, e.y_query * 1e30)
           for e in sinusoid_episodes(rng, 4)]
    with pytest.raises(NonFiniteError):
        learner.learn([bad])
    assert_same_state(before, snapshot(learner))


@pytest.mark.parametrize("name", SUPERVISED)
def test_meta_test_interface(name):
    rng = np.random.default_rng(10)
    learner = make(name)
    episodes = classification_episodes(rng)
    metrics = learner.learn([episodes]).values
    assert {"loss/query", "meta/accuracy", "meta/grad_norm"} <= metrics.keys()
    assert ("meta/accuracy_pre" in metrics) == learner.has_pre_metrics
    adapted = learner.adapt([learner.params] * len(episodes), episodes)  # the runner's inner-step form
    assert len(adapted) == len(episodes)
    out = learner.predict(adapted[0], torch.as_tensor(episodes[0].x_query))
    assert out.shape == (len(episodes[0].x_query), 3)
    report = learner.evaluate(episodes)
    assert {"loss/query", "meta/accuracy"} <= report.keys() and 0.0 <= report["meta/accuracy"] <= 1.0
    with pytest.raises(ValueError, match="same shapes"):
        learner.learn([[episodes[0], classification_episodes(rng, tasks=1, shots=3)[0]]])


@pytest.mark.parametrize("name", ["protonet", "matching"])
def test_metric_learners_refuse_regression(name):
    learner = make(name, spec=NetSpec(input_shape=(1,), output_dim=1))
    with pytest.raises(ValueError, match="classifier"):
        learner.learn([sinusoid_episodes(np.random.default_rng(0), 2)])


def test_registrations():
    expected = {"sl-maml": SLMAML, "anil": ANIL, "meta-sgd": MetaSGD, "sl-reptile": SLReptile,
                "protonet": ProtoNet, "matching": MatchingNetworks, "meta-lstm": MetaLSTM,
                "lstm-optimizer": LSTMOptimizerLearner}
    for name, cls in expected.items():
        alg = registry.get(name)
        assert alg.kind == "supervised" and alg.learner_class() is cls
        assert [p.name for p in alg.plan(alg.spec()).phases] == ["train0"]
        assert alg.adaptation(alg.spec(), 1) == episode_plan()
        assert {m.key for m in alg.metrics} >= {"meta/accuracy", "loss/query"}
    with pytest.raises(ValidationError):
        registry.get("sl-maml").spec(inner_lr=0.0)
    with pytest.raises(ValidationError):
        registry.get("sl-reptile").spec(outer_lr=2.0)
    with pytest.raises(ValidationError):
        registry.get("protonet").spec(inner_lr=0.1)  # no such setting
    with pytest.raises(TypeError, match="NetSpec"):
        SLMAML(object())  # type: ignore[arg-type]


def test_registrations_import_no_torch():
    code = ("import sys\nfrom algorithms import registry\nregistry.names()\n"
            "assert 'torch' not in sys.modules, 'a registration imported torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


# --- learning -----------------------------------------------------------------------------------
def test_maml_learns_sinusoid_regression():
    """MAML (Finn et al. 2017, sec. 5.1: 40-40 ReLU MLP, α = 0.01, one inner step, Adam 1e-3,
    25 tasks of 10 shots per meta-batch) for 1000 meta-iterations (~4 s on one thread), evaluated
    on 100 held-out sinusoids.  Query MSE, measured with seed 0:

    * before training: θ itself 4.19, after 1 inner step 4.03, after 10 steps 4.18;
    * after 1000 iterations: θ itself 3.01, after 1 step 1.63, after 10 steps 0.93 (seeds 1 and
      2: 2.98 / 1.48 / 0.81 and 3.05 / 1.40 / 0.76).

    θ alone stays near the variance of a random sinusoid (it cannot know the task); adapted, the
    MSE falls well below it and below its own start.
    """
    rng = np.random.default_rng(0)
    learner = SLMAML(NetSpec(input_shape=(1,), output_dim=1, hidden_sizes=(40, 40)),
                     registry.get("sl-maml").spec(inner_lr=0.01, inner_steps=1, outer_lr=1e-3), seed=0)
    held_out = sinusoid_episodes(np.random.default_rng(123), 100)

    def evaluate():
        one, ten = learner.evaluate(held_out, steps=1), learner.evaluate(held_out, steps=10)
        return one["meta/mse_pre"], one["meta/mse"], ten["meta/mse"]

    pre0, post1_0, post10_0 = evaluate()
    for _ in range(1000):
        learner.learn([sinusoid_episodes(rng, 25)])
    pre, post1, post10 = evaluate()
    assert post1_0 > 3.5 and post10_0 > 3.5  # an untrained θ does not adapt
    assert post1 < 0.75 * pre and post10 < 0.5 * pre
    assert post1 < 0.5 * post1_0 and post10 < 0.3 * post10_0


def test_protonet_learns_a_synthetic_5_way_task():
    """5-way 5-shot episodes of 16-dimensional inputs: 4 dimensions carry the class (a class mean
    plus noise 0.5), 12 are nuisance noise of scale 3 that a random embedding cannot ignore.
    Training classes (40) and held-out classes (20) differ.  ProtoNet (MLP 32-32, Adam 1e-3, 8
    tasks per meta-batch) for 600 meta-iterations (~1 s): held-out query accuracy 0.23 -> 0.92
    (seed 0; seed 1: 0.22 -> 0.86; chance 0.2)."""
    rng = np.random.default_rng(0)
    task = noisy_classes(rng)
    held_out = task.held_out()
    learner = ProtoNet(NetSpec(input_shape=(task.input_dim,), output_dim=task.ways, hidden_sizes=(32, 32)), seed=0)
    start = learner.evaluate(held_out)["meta/accuracy"]
    for _ in range(600):
        learner.learn([[task.episode(rng, task.train) for _ in range(8)]])
    end = learner.evaluate(held_out)["meta/accuracy"]
    assert start < 0.35 and end > 0.8


def test_task_loss_matches_torch():
    gen = torch.Generator().manual_seed(3)
    logits, y = torch.randn(2, 5, 3, generator=gen), torch.randint(0, 3, (2, 5), generator=gen)
    ce = task_loss(logits, y, classification=True)
    assert torch.allclose(ce, torch.stack([torch.nn.functional.cross_entropy(logits[i], y[i]) for i in range(2)]))
    out, target = torch.randn(2, 5, 1, generator=gen), torch.randn(2, 5, 1, generator=gen)
    assert torch.allclose(task_loss(out, target, classification=False), ((out - target) ** 2).mean(dim=(1, 2)))


def test_auto_task_batching_picks_what_measured_faster():
    """vmap for MLPs (4x the loop on CPU), the loop for conv4 on a CPU (vmap measured 0.6x)."""
    mlp = SLMAML(NetSpec(input_shape=(1,), output_dim=1), seed=0)
    conv = SLMAML(NetSpec(input_shape=(1, 8, 8), output_dim=5, kind="conv4"), seed=0)
    assert mlp.config.task_batching == "auto" and (mlp.task_batching, conv.task_batching) == ("vmap", "loop")
    forced = SLMAML(NetSpec(input_shape=(1, 8, 8), output_dim=5, kind="conv4"),
                    registry.get("sl-maml").spec(task_batching="vmap"))
    assert forced.task_batching == "vmap"
