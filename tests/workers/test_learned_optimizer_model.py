"""A learned optimizer from the model registry: an ``lstm-optimizer`` learner really trained on
digits-rotations problems, logged and registered in a real MLflow store (SQLite + local artifacts in
the test's temp dir), loaded back with ``LearnedOptimizer.load("models:/NAME@ALIAS", params)`` and
used as a ``torch.optim.Optimizer`` in an ordinary training loop; its refusals; no Ray."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from algorithms import registry
from algorithms.learned_opt.learner import PREFIX
from tests.workers.model_store import fresh_store
from workers.contract import JobSpec
from workers.distributions import build_distribution
from workers.loop import train_in_process
from workers.model import LearnedOptimizer, MetaPolicy, ModelFormatError, SupervisedMetaModel, log_meta_policy

NAME = "digits-l2l"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """lstm-optimizer on 5-way 5-shot digits-rotations (an MLP of 20 units; T = 20, truncations of
    10), 15 meta-iterations, registered as NAME with the alias ``champion``."""
    spec = JobSpec.model_validate({
        "name": NAME, "algorithm": {"name": "lstm-optimizer", "steps": 20, "unroll": 10, "test_steps": 20,
                                    "meta_lr": 3e-3},
        "task_family": {"name": "digits-rotations", "params": {"ways": 5, "shots": 5, "queries": 5}},
        "policy": {"hidden_sizes": [20]}, "meta_batch_size": 4, "iterations": 15, "seed": 0})
    tf = spec.task_family
    dist = build_distribution(tf.name, seed=spec.seed, **tf.family_kwargs())
    learner = registry.make_learner(spec.algorithm, spec.model_spec(dist), seed=spec.seed)
    results = train_in_process(learner, dist, meta_batch_size=spec.meta_batch_size, episodes_per_task=1,
                               iterations=spec.iterations, seed=spec.seed)
    with fresh_store(tmp_path_factory.mktemp("mlflow"), "metarl-learned-optimizer-tests") as store:
        with mlflow.start_run(experiment_id=store.experiment_id):
            reg = log_meta_policy(state=learner.state_dict(), spec=spec, final_metrics=results[-1].metrics,
                                  register_as=NAME, family=dist)
        mlflow.MlflowClient(store.uri).set_registered_model_alias(NAME, "champion", reg.version)
        yield learner, dist, reg


def _classifier(seed: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 5)).to(dtype)


def _episode(dist, seed: int):  # noqa: ANN001
    rng = np.random.default_rng(seed)
    return dist.episode(dist.sample_tasks(1, rng, split="test")[0], rng)


def test_the_registered_optimizer_trains_a_network_in_an_ordinary_loop(trained):
    """A plain ``nn.Sequential`` started from the model's θ and trained by ``opt.step()`` on a
    held-out task's support set follows the learner's own adaptation (same losses), and its loss
    falls."""
    learner, dist, reg = trained
    model = _classifier(0)
    theta = learner.params  # body.0.weight, body.0.bias, head.weight, head.bias
    with torch.no_grad():
        for p, v in zip(model.parameters(), theta.values(), strict=True):
            p.copy_(v)
    opt = LearnedOptimizer.load(f"models:/{NAME}@champion", model.parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    for k, v in learner.optimizer_net.state_dict().items():  # φ is the trained one
        assert torch.equal(opt.net.state_dict()[k], v.cpu())
    ep = _episode(dist, 1)
    x, y = torch.as_tensor(ep.x_support), torch.as_tensor(ep.y_support)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(nn.functional.cross_entropy(model(x), y)))
    np.testing.assert_allclose(losses, learner.training_curve(ep), rtol=1e-4, atol=1e-5)
    assert losses[-1] < 0.5 * losses[0], losses
    # the hidden states live in the optimizer's state dict and restore into a fresh optimizer
    saved = opt.state_dict()
    assert {"h", "c"} <= saved["state"][0].keys()
    again = LearnedOptimizer.load(f"models:/{NAME}/{reg.version}", model.parameters())
    again.load_state_dict(saved)
    for p in model.parameters():
        assert torch.equal(again.state[p]["h"], opt.state[p]["h"])


def test_it_is_also_a_supervised_model_that_adapts(trained):
    learner, dist, _ = trained
    m = MetaPolicy.load(f"models:/{NAME}@champion")
    assert isinstance(m, SupervisedMetaModel) and m.default_steps == 20
    assert any(k.startswith(PREFIX) for k in m.params)
    ep = _episode(dist, 3)
    adapted = m.adapt(ep.x_support, ep.y_support)
    want = learner.predict(learner.adapt_task(learner.params, ep), torch.as_tensor(ep.x_query)).numpy()
    np.testing.assert_allclose(adapted.outputs(ep.x_query), want, rtol=1e-5, atol=1e-5)


def test_what_does_not_fit_is_refused_clearly(trained):
    with pytest.raises(TypeError, match="float64, wider than the LSTM's torch.float32"):
        LearnedOptimizer.load(f"models:/{NAME}@champion", _classifier(0, torch.float64).parameters())
    with pytest.raises(ValueError, match="max_coordinates"):
        LearnedOptimizer.load(f"models:/{NAME}@champion", _classifier(0).parameters(), max_coordinates=1000)
    named = list(_classifier(0).named_parameters())
    with pytest.raises(ValueError, match="'1.weight'.*max_coordinates"):
        LearnedOptimizer.load(f"models:/{NAME}@champion", named, max_coordinates=100)


def test_another_algorithms_model_is_not_an_optimizer(trained, tmp_path):
    _, dist, _ = trained
    spec = JobSpec.model_validate({
        "name": "digits-proto", "algorithm": {"name": "protonet"},
        "task_family": {"name": "digits-rotations", "params": {"ways": 5, "shots": 1, "queries": 2}},
        "policy": {"hidden_sizes": [8]}, "meta_batch_size": 2, "iterations": 1, "seed": 0})
    learner = registry.make_learner(spec.algorithm, spec.model_spec(dist), seed=0)
    MetaPolicy.from_learner_state(spec, learner.state_dict(), source="test").save(tmp_path / "proto")
    with pytest.raises(ModelFormatError, match="'protonet' model, not a learned optimizer"):
        LearnedOptimizer.load(str(tmp_path / "proto"), _classifier(0).parameters())
