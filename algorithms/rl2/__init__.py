"""RL² (Duan et al. 2016, "RL²: Fast reinforcement learning via slow reinforcement learning";
Wang et al. 2016, "Learning to reinforcement learn"): a recurrent policy whose hidden state
persists across the episodes of a trial, trained by recurrent PPO over whole trials.

The modules:

* :mod:`algorithms.rl2.spec` -- :class:`~algorithms.rl2.spec.RL2Spec`, the configuration (light:
  pydantic only);
* :mod:`algorithms.rl2.policy` -- the GRU policy, usable functionally over a params dict;
* :mod:`algorithms.rl2.trials` -- :class:`~algorithms.rl2.trials.Trials`, the data of trials;
* :mod:`algorithms.rl2.ppo` -- GAE over a trial, the recurrent PPO loss and the learner.

Importing this package imports neither torch nor the learner, and registers nothing yet (the
wiring into the engine comes later).
"""
