"""Learning tests: MAML-TRPO on 2D navigation really meta-learns within a bounded budget."""

import numpy as np
import pytest
import torch

from algorithms.maml import MAML, MAMLSpec, TRPOSpec
from algorithms.policies import PolicySpec
from workers.envs import make_family
from workers.loop import train_in_process


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_maml_trpo_navigation2d_learns_to_adapt(seed):
    """Meta-batch 20, 20 episodes per task, one inner step with inner_lr 0.1, max_kl 0.01 (the
    MAML paper's setting).  Over iterations 26-30 the post-adaptation return must be >= -25 and
    at least 10 above the pre-adaptation return (a public MAML-TRPO port: about -16 / -40 there)."""
    torch.set_num_threads(2)
    family = make_family("navigation2d")
    spec = PolicySpec(obs_dim=2, act_dim=2, hidden_sizes=(100, 100), activation="relu")
    learner = MAML(spec, MAMLSpec(inner_lr=0.1, inner_steps=1, outer=TRPOSpec(max_kl=0.01)), seed=seed)
    results = train_in_process(
        learner, family, meta_batch_size=20, episodes_per_task=20, iterations=30, seed=seed
    )
    last = results[25:30]
    pre = np.mean([r.metrics["meta/return_pre"] for r in last])
    post = np.mean([r.metrics["meta/return_post"] for r in last])
    first_post = np.mean([r.metrics["meta/return_post"] for r in results[:3]])
    assert post >= -25.0, (pre, post)
    assert post - pre >= 10.0, (pre, post)
    assert post > first_post + 20.0  # the meta-policy itself improved, not just the inner step
    assert all(r.metrics["meta/kl"] <= 0.01 + 1e-6 for r in results)
