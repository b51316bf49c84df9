"""The learner on CUDA (skipped without a GPU), without Ray: :class:`workers.learner.Learner`, the
class the learner actor wraps, asked for a GPU, holds its policy there, and its inner and outer
updates on a real sampled navigation2d meta-batch agree with the same learner on the CPU.

The Ray-level check (a whole job whose learner actor lands on the GPU) is
``tests/workers/test_driver.py::test_learner_runs_on_cuda``; this one also runs where Ray is not
installed (the GPU machine of ``docs/benchmarks.md``'s device figures).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.base import MetaBatch
from algorithms.maml import MAMLSpec, TRPOSpec
from algorithms.policies import PolicySpec
from tests.algorithms.helpers import rel_err
from workers.envs import make_family
from workers.learner import Learner
from workers.loop import TaskSchedule, collect_phases
from workers.sampler import Sampler

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def problem():
    family = make_family("navigation2d")
    spec = PolicySpec(obs_dim=2, act_dim=2, hidden_sizes=(100, 100), activation="relu")
    config = MAMLSpec(inner_lr=0.1, outer=TRPOSpec(max_kl=0.01, curvature_subsample=1.0))
    cpu = Learner(config, spec, seed=0, gpus=0)
    sampler = Sampler(family, spec, envs_per_task=20, seed=0)
    try:
        phases = collect_phases(cpu.learner, sampler, TaskSchedule(family, 8, 0).tasks(0), episodes_per_task=20)
        batch = MetaBatch(train=phases[:-1], valid=phases[-1])
    finally:
        sampler.close()
    return spec, config, batch


def test_learner_asked_for_a_gpu_holds_its_policy_on_cuda_and_hands_cpu_params(problem):
    spec, config, _ = problem
    gpu = Learner(config, spec, seed=0, gpus=1)
    assert gpu.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in gpu.learner.policy.parameters())
    assert all(v.device.type == "cpu" for v in gpu.params().values())  # what rollout workers get


def test_adaptation_and_trpo_update_on_cuda_match_the_cpu(problem):
    spec, config, batch = problem
    cpu = Learner(config, spec, seed=0, gpus=0)
    gpu = Learner(config, spec, seed=0, gpus=1)
    theta = cpu.params()
    for k, v in gpu.params().items():
        assert torch.equal(v, theta[k])  # same seed, same initial policy

    adapted_cpu = cpu.adapt(theta, batch.train[0])
    adapted_gpu = gpu.adapt(theta, batch.train[0])
    for a, b in zip(adapted_gpu, adapted_cpu, strict=True):
        step = torch.cat([(b[k] - theta[k]).flatten() for k in theta])
        diff = torch.cat([(a[k] - b[k]).flatten() for k in theta])
        assert step.norm() > 0
        assert float(diff.norm() / step.norm()) < 1e-3

    layout = (len(batch.train[0]), len(batch.valid))
    shards = [[e] for e in batch.train[0]] + [[e] for e in batch.valid]
    m_cpu = cpu.step(layout, *shards)
    m_gpu = gpu.step(layout, *shards)
    assert m_cpu["trpo/accepted"] == m_gpu["trpo/accepted"] == 1.0
    delta_cpu = torch.cat([(v - theta[k]).flatten() for k, v in cpu.params().items()])
    delta_gpu = torch.cat([(v - theta[k]).flatten() for k, v in gpu.params().items()])
    assert delta_cpu.norm() > 0
    assert rel_err(delta_gpu, delta_cpu) < 1e-2
    assert m_gpu["meta/kl"] == pytest.approx(m_cpu["meta/kl"], rel=1e-2)
    assert m_gpu["meta/kl"] <= config.outer.max_kl


def test_rl2_update_on_cuda_matches_the_cpu():
    """RL²'s recurrent PPO (the fused GRU: cuDNN on the GPU) from the same sampled trials: the same
    loss terms and, after one update of one epoch, the same parameters to float tolerance."""
    from algorithms.rl2.spec import RL2Spec
    from workers.trial_sampler import TrialSampler

    family = make_family("navigation2d", max_episode_steps=20)
    config = RL2Spec(hidden_size=32, encoder_sizes=(32,), epochs=1, minibatches=1)
    spec = PolicySpec(obs_dim=2, act_dim=2, hidden_sizes=(16,))
    cpu = Learner(config, spec, seed=0, gpus=0)
    gpu = Learner(config, spec, seed=0, gpus=1)
    assert gpu.device.type == "cuda" and all(p.device.type == "cuda" for p in gpu.learner.policy.parameters())
    sampler = TrialSampler(family, cpu.learner.policy.spec, trials_per_task=4, seed=0)
    try:
        trials = sampler.sample(family.sample_tasks(4, np.random.default_rng(0)), cpu.params(), episodes_per_trial=2)
    finally:
        sampler.close()
    m_cpu = cpu.learn([1], trials)
    m_gpu = gpu.learn([1], trials)
    for key in ("loss/policy", "loss/value", "meta/return_last_episode"):
        assert m_gpu[key] == pytest.approx(m_cpu[key], rel=1e-4, abs=1e-5), key
    after_cpu, after_gpu = cpu.params(), gpu.params()
    assert max(rel_err(after_gpu[k], after_cpu[k]) for k in after_cpu) < 1e-3
