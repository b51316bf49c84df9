"""RL² (Duan et al. 2016, "RL²: Fast reinforcement learning via slow reinforcement learning";
Wang et al. 2016, "Learning to reinforcement learn"): a recurrent policy whose hidden state
persists across the episodes of a trial, trained by recurrent PPO over whole trials.

The modules:

* :mod:`algorithms.rl2.spec` -- :class:`~algorithms.rl2.spec.RL2Spec`, the configuration (light:
  pydantic only);
* :mod:`algorithms.rl2.policy` -- the GRU policy, usable functionally over a params dict;
* :mod:`algorithms.rl2.trials` -- :class:`~algorithms.rl2.trials.Trials`, the data of trials;
* :mod:`algorithms.rl2.ppo` -- GAE over a trial, the recurrent PPO loss and the learner.

This package registers the algorithm and imports neither torch nor the learner (the learner, the
recurrent policy spec and the trial sampler are named by reference, imported where they run).
"""

from __future__ import annotations

from algorithms.plans import single_phase_plan, trial_plan
from algorithms.registry import Algorithm, Metric, lazy_names, register
from algorithms.rl2.spec import RL2Spec, check_job

#: What RL²'s learner reports first: the return (and success) of a trial's first and last
#: episodes -- how much the policy gains within a trial.
RL2_METRICS = (
    Metric("meta/return_first_episode", "return, first episode of a trial", ".1f"),
    Metric("meta/return_last_episode", "return, last episode of a trial", ".1f"),
    Metric("meta/success_last_episode", "success, last episode of a trial", ".2f"),
)

RL2_ALGORITHM = register(Algorithm(
    name="rl2",
    spec=RL2Spec,
    learner="algorithms.rl2.ppo:RL2Learner",
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: trial_plan(),
    metrics=RL2_METRICS,
    summary="RL² (Duan et al. 2016): a GRU policy adapting in its hidden state, recurrent PPO over whole trials",
    policy="algorithms.rl2.ppo:recurrent_spec_for",
    sampler="workers.trial_sampler:make_trial_sampler",
    check_job=check_job,
))

__all__ = ["RL2Spec", "RL2_ALGORITHM", "RL2_METRICS"]

#: the learner's names (``from algorithms.rl2 import RL2Learner``), imported on first use
__getattr__ = lazy_names("algorithms.rl2.ppo")
