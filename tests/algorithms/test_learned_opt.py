"""The learned optimizer of Andrychowicz et al. 2016 (``algorithms.learned_opt``) against
independent computations: the preprocessing and the LSTM cell by hand, the truncated-BPTT
meta-gradient by finite differences (float64), the ``torch.optim`` wrapper against the functional
runner, its checkpoints, its errors, and a short meta-training that must learn."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from algorithms.learned_opt.lstm_optimizer import LSTMOptimizer, LSTMState, preprocess_gradients
from algorithms.learned_opt.meta_train import (
    curve_score,
    meta_train,
    run_baseline,
    run_optimizer,
    tune_baseline,
    unroll_meta_loss,
)
from algorithms.learned_opt.optimizees import (
    SPLIT_OFFSETS,
    DigitsMLPFamily,
    QuadraticFamily,
    QuadraticProblems,
    problem_seeds,
)
from algorithms.learned_opt.specs import LSTMOptimizerSpec, MetaTrainSpec
from algorithms.learned_opt.torch_optimizer import LearnedOptimizer

TINY = LSTMOptimizerSpec(hidden_size=3, num_layers=2)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- the LSTM optimizer ---------------------------------------------------------------------------
def test_preprocessing_matches_the_formula_by_hand():
    p = 10.0
    threshold = math.exp(-p)  # 4.54e-5
    grad = torch.tensor([1.0, -2.0, 1e3, 1e-5, -3e-6, 0.0, threshold, -threshold], dtype=torch.float64)
    out = preprocess_gradients(grad, p)
    expected = [
        (0.0, 1.0),                       # log 1 / 10 = 0
        (math.log(2.0) / 10, -1.0),       # 0.0693, sign −1
        (math.log(1e3) / 10, 1.0),        # 0.6908
        (-1.0, math.exp(10) * 1e-5),      # below e^-10: (−1, e^10 ∇) = (−1, 0.2203)
        (-1.0, -math.exp(10) * 3e-6),     # (−1, −0.0661)
        (-1.0, 0.0),                      # zero gradient
        (-1.0, 1.0),                      # |∇| = e^-p: the log branch, log(e^-10)/10 = −1
        (-1.0, -1.0),
    ]
    assert out.shape == (8, 2)
    np.testing.assert_allclose(out.numpy(), np.array(expected), rtol=1e-12, atol=1e-15)
    assert abs(expected[3][1] - 0.220264657948) < 1e-9  # e^10 · 1e-5, written out
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="p must be positive"):
        preprocess_gradients(grad, 0.0)


def test_lstm_cell_against_the_equations_by_hand():
    """One step of the 2-layer LSTM written out: i, f, g, o = σ, σ, tanh, σ of ``W_ih x + b_ih +
    W_hh h + b_hh`` (PyTorch's gate order), ``c' = f c + i g``, ``h' = o tanh c'``; output
    ``0.1 · (w h'_top + b)``."""
    net = LSTMOptimizer(seed=3).double()
    n = 5
    rng = np.random.default_rng(0)
    grad = torch.tensor(rng.normal(size=n) * 10.0 ** rng.integers(-7, 2, size=n))
    state = LSTMState(torch.tensor(rng.normal(size=(2, n, 20))), torch.tensor(rng.normal(size=(2, n, 20))))
    update, new = net(grad, state)

    x = preprocess_gradients(grad, 10.0)
    hs, cs = [], []
    for layer, cell in enumerate(net.cells):
        z = x @ cell.weight_ih.T + cell.bias_ih + state.h[layer] @ cell.weight_hh.T + cell.bias_hh
        i, f, g, o = z.split(20, dim=-1)
        c = torch.sigmoid(f) * state.c[layer] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
        cs.append(c)
        x = h
    expected = 0.1 * (x @ net.output.weight.T + net.output.bias).squeeze(-1)
    torch.testing.assert_close(update, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(new.h, torch.stack(hs), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(new.c, torch.stack(cs), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n", [1, 7, 300, 9000])
def test_output_shape_and_coordinates_are_independent(n):
    net = LSTMOptimizer(seed=1, chunk_size=4096)  # 9000 coordinates: three chunks
    gen = torch.Generator().manual_seed(n)
    grad = torch.randn(n, generator=gen) * 10.0 ** torch.randint(-8, 3, (n,), generator=gen)
    state = net.init_state(n)
    with torch.no_grad():
        update, state = net(grad, state)  # a second step from a non-zero state
        update, new = net(grad * 0.5, state)
        assert update.shape == (n,) and new.h.shape == (2, n, 20) and new.c.shape == (2, n, 20)
        perm = torch.randperm(n, generator=gen)
        permuted, pnew = net(grad[perm] * 0.5, LSTMState(state.h[:, perm], state.c[:, perm]))
        torch.testing.assert_close(permuted, update[perm], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(pnew.h, new.h[:, perm], rtol=1e-5, atol=1e-7)
        whole = copy.deepcopy(net)
        whole.chunk_size = None
        one_pass, _ = whole(grad * 0.5, state)
        torch.testing.assert_close(one_pass, update, rtol=1e-5, atol=1e-7)


def test_lstm_optimizer_rejects_bad_input_and_is_seeded():
    net = LSTMOptimizer(TINY)
    with pytest.raises(ValueError, match="1-D"):
        net(torch.zeros(2, 3), net.init_state(6))
    with pytest.raises(ValueError, match="do not match"):
        net(torch.zeros(4), net.init_state(5))
    a, b = LSTMOptimizer(seed=7), LSTMOptimizer(seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(LSTMOptimizer(seed=8).output.weight, a.output.weight)
    restored = LSTMOptimizer.from_state_dict(a.state_dict())
    assert torch.equal(restored.cells[1].weight_hh, a.cells[1].weight_hh)
    raw = LSTMOptimizer(LSTMOptimizerSpec(preprocess=False))
    assert raw.cells[0].weight_ih.shape == (80, 1) and a.cells[0].weight_ih.shape == (80, 2)


# --- optimizees -----------------------------------------------------------------------------------
def test_problem_draws_are_seeded_and_the_splits_disjoint():
    family = QuadraticFamily(dim=4)
    train = family.sample("train", 0, 5, dtype=torch.float64)
    again = family.sample("train", 3, 2, dtype=torch.float64)  # problems 3, 4 drawn in another batch
    assert torch.equal(train.W[3:], again.W) and torch.equal(train.theta0[3:], again.theta0)
    test = family.sample("test", 0, 5, dtype=torch.float64)
    assert not torch.allclose(train.W, test.W)
    assert set(problem_seeds("train", 0, 100)).isdisjoint(problem_seeds("test", 0, 100))
    assert problem_seeds("val", 2, 1) == [SPLIT_OFFSETS["val"] + 2]
    with pytest.raises(ValueError, match="split"):
        problem_seeds("dev", 0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside"):
        family.sample("train", -1, 2)
    # the loss and its gradient by hand: f = ‖Wθ − y‖², ∇f = 2 Wᵀ(Wθ − y)
    theta = train.init_params().requires_grad_(True)
    loss = train.loss(theta)
    r = torch.einsum("bij,bj->bi", train.W, theta.detach()) - train.y
    torch.testing.assert_close(loss.detach(), (r**2).sum(-1))
    (grad,) = torch.autograd.grad(loss.sum(), theta)
    torch.testing.assert_close(grad, 2 * torch.einsum("bji,bj->bi", train.W, r))
    with pytest.raises(ValueError, match="shape"):
        train.loss(torch.zeros(5, 3))


def test_mlp_problems_match_a_torch_module_and_stream_minibatches_deterministically():
    family = DigitsMLPFamily()
    a = family.sample("train", 10, 3, dtype=torch.float64)
    b = family.sample("train", 10, 3, dtype=torch.float64)
    assert a.n_params == 64 * 20 + 20 + 20 * 10 + 10 == 1510
    # minibatch 5 first, then 0: the same as asking in order
    late = b.batch_indices(5)
    for t in range(6):
        a.batch_indices(t)
    assert torch.equal(a.batch_indices(5), late) and a.batch_indices(0).shape == (3, 128)
    assert len(set(a.batch_indices(0)[0].tolist())) == 128  # an epoch is a permutation: no repeats
    # the loss against nn.Linear / sigmoid / cross-entropy
    theta = a.init_params()
    p = a.shape.unflatten(theta[1])
    model = torch.nn.Sequential(torch.nn.Linear(64, 20), torch.nn.Sigmoid(), torch.nn.Linear(20, 10)).double()
    with torch.no_grad():
        model[0].weight.copy_(p["W1"].T)
        model[0].bias.copy_(p["b1"])
        model[2].weight.copy_(p["W2"].T)
        model[2].bias.copy_(p["b2"])
    rows = a.batch_indices(2)[1]
    expected = torch.nn.functional.cross_entropy(model(a.x[rows]), a.y[rows])
    torch.testing.assert_close(a.loss(theta, 2)[1], expected)
    assert float(a.full_loss(theta)[0]) > 1.5  # about log 10 at initialisation
    bound = 1 / math.sqrt(64)
    assert float(p["W1"].abs().max()) <= bound
    other = family.sample("test", 10, 3, dtype=torch.float64)
    assert not torch.equal(other.theta0, a.theta0)


def test_meta_train_spec_validation():
    with pytest.raises(ValidationError, match="must divide"):
        MetaTrainSpec(steps=100, unroll=30)
    with pytest.raises(ValidationError):
        LSTMOptimizerSpec(hidden_size=0)


# --- truncated BPTT's meta-gradient -----------------------------------------------------------------
def quadratic_grad(problems: QuadraticProblems, theta: torch.Tensor) -> torch.Tensor:
    """∇‖Wθ − y‖² = 2 Wᵀ(Wθ − y), no autograd."""
    r = torch.einsum("bij,bj->bi", problems.W, theta) - problems.y
    return 2 * torch.einsum("bji,bj->bi", problems.W, r)


@torch.no_grad()
def reference_truncation(net, problems, theta, state, unroll, fixed_grads=None):
    """The truncation's meta-loss Σ_{j=1}^{unroll} mean_b f(θ_{s+j}) by a plain loop.  With
    ``fixed_grads`` the LSTM is fed those gradients (∂∇/∂φ = 0: the ∇_t of the unperturbed
    trajectory, constants of φ); without, the gradients of this trajectory (returned)."""
    grads, total = [], 0.0
    for j in range(unroll):
        grad = quadratic_grad(problems, theta) if fixed_grads is None else fixed_grads[j]
        grads.append(grad)
        update, state = net(grad.reshape(-1), state)
        theta = theta + update.view_as(theta)
        total += float(problems.loss(theta).mean())
    return total, grads, theta, state


def test_truncated_bptt_meta_gradient_matches_finite_differences():
    """float64, a tiny unroll: d(meta-loss)/dφ of :func:`unroll_meta_loss` equals central finite
    differences of the plain loop with the gradients ∇_t held at their unperturbed values, for two
    consecutive truncations (the second starting from the first's end, detached)."""
    net = LSTMOptimizer(LSTMOptimizerSpec(hidden_size=4), seed=2).double()
    problems = QuadraticFamily(dim=3).sample("train", 0, 2, dtype=torch.float64)
    theta = problems.init_params()
    state = net.init_state(theta.numel())
    entries = [("cells.0.weight_ih", (1, 0)), ("cells.0.bias_hh", (2,)), ("cells.1.weight_hh", (5, 3)),
               ("output.weight", (0, 1)), ("output.bias", (0,))]
    params = dict(net.named_parameters())
    eps = 1e-5  # the meta-loss is ~10²: round-off ~10⁻¹⁴/ε, truncation error ~ε²
    for k in range(2):  # truncations: steps 0..3 and 3..6
        meta, theta_end, state_end = unroll_meta_loss(net, problems, theta, state, start=3 * k, unroll=3)
        net.zero_grad()
        meta.backward()
        value, grads, ref_end, _ = reference_truncation(net, problems, theta, state, 3)
        assert math.isclose(float(meta.detach()), value, rel_tol=1e-12)
        torch.testing.assert_close(theta_end.detach(), ref_end, rtol=1e-12, atol=1e-12)
        for name, index in entries:
            p = params[name]
            with torch.no_grad():
                original = p[index].item()
                p[index] = original + eps
                up = reference_truncation(net, problems, theta, state, 3, grads)[0]
                p[index] = original - eps
                down = reference_truncation(net, problems, theta, state, 3, grads)[0]
                p[index] = original
            fd = (up - down) / (2 * eps)
            assert p.grad is not None
            got = float(p.grad[index])
            assert math.isclose(got, fd, rel_tol=1e-6, abs_tol=1e-8), (k, name, got, fd)
        theta, state = theta_end.detach(), state_end.detach()


def test_meta_train_applies_one_step_per_truncation_from_detached_starts():
    """meta_train with plain SGD on φ: φ after an episode of two truncations is φ0 − η g1 − η g2,
    g1 = ∇ of truncation 1 at φ0, g2 = ∇ of truncation 2 at φ1, from where truncation 1 ended."""
    net = LSTMOptimizer(TINY, seed=4).double()
    family = QuadraticFamily(dim=3)
    lr = 1e-3
    reference = copy.deepcopy(net)
    problems = family.sample("train", 0, 2, dtype=torch.float64)
    theta, state = problems.init_params(), reference.init_state(6)
    expected_losses = []
    for k in range(2):
        meta, theta, state = unroll_meta_loss(reference, problems, theta, state, start=4 * k, unroll=4)
        reference.zero_grad()
        meta.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= lr * p.grad
        expected_losses.append(float(meta.detach()))
        theta, state = theta.detach(), state.detach()
    spec = MetaTrainSpec(episodes=1, problems_per_episode=2, steps=8, unroll=4)
    result = meta_train(net, family, spec, optimizer=torch.optim.SGD(net.parameters(), lr=lr))
    assert result.meta_losses == pytest.approx(expected_losses, rel=1e-12)
    assert result.episode_losses == pytest.approx([sum(expected_losses)], rel=1e-12)
    for a, b in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# --- the torch.optim wrapper ------------------------------------------------------------------------
def test_learned_optimizer_reproduces_run_optimizer():
    """θ of a batch of quadratics as one nn.Parameter, trained by LearnedOptimizer in an ordinary
    loop: the same losses as the functional runner."""
    net = LSTMOptimizer(seed=5)
    problems = QuadraticFamily(dim=6).sample("test", 0, 4)
    expected = run_optimizer(net, problems, 15)
    theta = torch.nn.Parameter(problems.init_params())
    opt = LearnedOptimizer([theta], net)
    losses = []
    for _ in range(16):
        opt.zero_grad()
        loss = problems.loss(theta)
        losses.append(loss.detach().double().numpy())
        loss.sum().backward()
        opt.step()
    np.testing.assert_allclose(np.stack(losses, axis=1), expected, rtol=1e-5)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def train_steps(model, opt, steps, start):
    gen = torch.Generator().manual_seed(1000 + start)
    for _ in range(steps):
        x = torch.randn(16, 3, generator=gen)
        y = x.sum(-1, keepdim=True).sin()
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()


def test_state_dict_round_trip_is_bit_identical():
    net = LSTMOptimizer(seed=6)
    # uninterrupted: 6 steps in one go (two calls, the same data as below)
    model = make_model()
    opt = LearnedOptimizer(model.parameters(), net)
    train_steps(model, opt, 3, 0)
    train_steps(model, opt, 3, 3)
    # interrupted: 3 steps, save model and optimizer through bytes, load both into fresh objects
    first = make_model()
    first_opt = LearnedOptimizer(first.parameters(), net)
    train_steps(first, first_opt, 3, 0)
    assert all(set(s) == {"h", "c"} for s in first_opt.state_dict()["state"].values())
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": first_opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    second = make_model()
    second.load_state_dict(saved["model"])
    second_opt = LearnedOptimizer(second.parameters(), net.state_dict())  # rebuilt from φ's state dict
    second_opt.load_state_dict(saved["opt"])
    train_steps(second, second_opt, 3, 3)
    for a, b in zip(model.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    for p, q in zip(model.parameters(), second.parameters(), strict=True):
        assert torch.equal(opt.state[p]["h"], second_opt.state[q]["h"])


def test_low_precision_params_keep_their_state_in_the_lstm_dtype():
    net = LSTMOptimizer(seed=7)
    w = torch.nn.Parameter(torch.linspace(-1, 1, 12, dtype=torch.bfloat16))
    opt = LearnedOptimizer([w], net)
    for _ in range(2):
        opt.zero_grad()
        (w.float() ** 2).sum().backward()
        opt.step()
    state = copy.deepcopy(opt.state_dict())
    fresh_w = torch.nn.Parameter(w.detach().clone())
    fresh = LearnedOptimizer([fresh_w], net)
    fresh.load_state_dict(state)
    assert fresh.state[fresh_w]["h"].dtype == torch.float32  # not cast to bfloat16 by torch
    assert torch.equal(fresh.state[fresh_w]["h"], opt.state[w]["h"])
    for param, o in ((w, opt), (fresh_w, fresh)):
        o.zero_grad()
        (param.float() ** 2).sum().backward()
        o.step()
    assert torch.equal(w, fresh_w) and w.dtype == torch.bfloat16


def test_learned_optimizer_errors_name_the_parameter():
    net = LSTMOptimizer(TINY)
    with pytest.raises(TypeError, match="'counts'.*floating-point"):
        LearnedOptimizer([("weight", torch.nn.Parameter(torch.zeros(3))),
                          ("counts", torch.zeros(3, dtype=torch.int64))], net)
    with pytest.raises(TypeError, match="'w64'.*float64.*wider"):
        LearnedOptimizer([("w64", torch.zeros(3, dtype=torch.float64, requires_grad=True))], net)
    LearnedOptimizer([torch.zeros(3, dtype=torch.float64, requires_grad=True)], copy.deepcopy(net).double())
    with pytest.raises(TypeError, match="parameter 1 of param group 0"):
        LearnedOptimizer([torch.zeros(3, requires_grad=True),
                          torch.zeros(2, dtype=torch.complex64, requires_grad=True)], net)
    with pytest.raises(ValueError, match="'big'.*max_coordinates = 100"):
        LearnedOptimizer([("small", torch.zeros(10, requires_grad=True)), ("big", torch.zeros(91, requires_grad=True))],
                         net, max_coordinates=100)
    with pytest.raises(ValueError, match="more than max_coordinates = 100"):
        LearnedOptimizer([{"params": [torch.zeros(60, requires_grad=True)]},
                          {"params": [torch.zeros(60, requires_grad=True)]}], net, max_coordinates=100)
    with pytest.raises(ValueError, match="no hyperparameters"):
        LearnedOptimizer([{"params": [torch.zeros(3, requires_grad=True)], "lr": 0.1}], net)
    with pytest.raises(TypeError, match="LSTMOptimizer or its state dict"):
        LearnedOptimizer([torch.zeros(3, requires_grad=True)], "net")  # type: ignore[arg-type]
    # a sparse gradient, at step
    emb = torch.nn.Embedding(10, 2, sparse=True)
    opt = LearnedOptimizer(emb.named_parameters(), net)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="'weight'.*sparse"):
        opt.step()
    # a state dict of another optimizer's parameters
    a = torch.zeros(4, requires_grad=True)
    opt_a = LearnedOptimizer([a], net)
    a.grad = torch.ones(4)
    opt_a.step()
    b = torch.zeros(5, requires_grad=True)
    opt_b = LearnedOptimizer([b], net)
    with pytest.raises(ValueError, match="expected a tensor of shape"):
        opt_b.load_state_dict(opt_a.state_dict())
    assert not opt_b.state  # nothing was loaded


def test_closure_and_params_without_grad():
    net = LSTMOptimizer(TINY)
    used = torch.nn.Parameter(torch.ones(3))
    unused = torch.nn.Parameter(torch.ones(2))
    opt = LearnedOptimizer([used, unused], net)

    def closure():
        opt.zero_grad()
        loss = (used**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and float(loss.detach()) == 3.0
    assert not torch.equal(used, torch.ones(3)) and torch.equal(unused, torch.ones(2))
    assert unused not in opt.state


# --- baselines and learning -------------------------------------------------------------------------
def test_baselines_and_the_tuning_criterion():
    problems = QuadraticFamily().sample("train", 0, 8)
    curve = run_baseline(problems, "sgd", 10.0, 20)  # diverges
    assert math.isinf(curve_score(curve)) and curve.shape == (8, 21)
    lr, grid = tune_baseline(problems, "momentum", 20, lrs=[1e-3, 1e-2, 10.0])
    assert lr == 1e-2 and math.isinf(grid[10.0])
    assert curve_score(np.array([[1.0, 3.0]]), "mean") == 2.0 and curve_score(np.array([[1.0, 3.0]])) == 3.0
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baseline(problems, "lion", 0.1, 5)


def test_meta_training_learns_to_beat_tuned_sgd_on_held_out_quadratics():
    """A short meta-training (the paper's quadratics: T = 100, unroll 20; no preprocessing and no
    output scaling, as in its sec. 3.1; 60 episodes of 16 problems, about 10 s on one core):
    the learned optimizer's mean final loss on 100 held-out problems is below the untrained
    LSTM's and below SGD's with the learning rate tuned on training problems."""
    family = QuadraticFamily()
    net = LSTMOptimizer(LSTMOptimizerSpec(preprocess=False, output_scale=1.0), seed=0)
    test = family.sample("test", 0, 100)
    untrained = float(run_optimizer(net, test, 100)[:, -1].mean())
    result = meta_train(net, family, MetaTrainSpec(episodes=60, problems_per_episode=16, meta_lr=3e-3))
    assert len(result.meta_losses) == 60 * 5 and all(map(math.isfinite, result.meta_losses))
    learned = float(run_optimizer(net, test, 100)[:, -1].mean())
    lr, _ = tune_baseline(family.sample("train", 100_000, 100), "sgd", 100, lrs=np.logspace(-3, -1, 9))
    sgd = float(run_baseline(test, "sgd", lr, 100)[:, -1].mean())
    print(f"untrained {untrained:.4g}, learned {learned:.4g}, sgd(lr={lr:.3g}) {sgd:.4g}")
    assert learned < 0.8 * sgd, (learned, sgd)
    assert learned < 0.01 * untrained, (learned, untrained)
