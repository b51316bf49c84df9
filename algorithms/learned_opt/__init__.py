"""Learned optimizers: "Learning to learn by gradient descent by gradient descent" (Andrychowicz,
Denil, Gómez Colmenarejo, Hoffman, Pfau, Schaul, Shillingford & de Freitas 2016).

An optimizer m with parameters φ -- a small LSTM applied to every coordinate of the optimizee's
gradient -- proposes the update ``θ_{t+1} = θ_t + m(∇f(θ_t); φ)``; φ is trained by gradient
descent (Adam) on the optimizee's losses along the trajectory, ``Σ_t f(θ_t)``, back-propagated
through the unrolled optimization (truncated BPTT).

Light module (pydantic only):

* :mod:`~algorithms.learned_opt.specs` -- :class:`~algorithms.learned_opt.specs.LSTMOptimizerSpec`
  (the LSTM's architecture) and :class:`~algorithms.learned_opt.specs.MetaTrainSpec` (T, the
  truncation, Adam's step size, episodes).

Torch modules (pure torch and numpy; nothing of Ray, MLflow or the service):

* :mod:`~algorithms.learned_opt.lstm_optimizer` -- the coordinatewise LSTM optimizer
  :class:`~algorithms.learned_opt.lstm_optimizer.LSTMOptimizer` and the gradient preprocessing of
  the paper's Appendix A;
* :mod:`~algorithms.learned_opt.optimizees` -- problem families with seeded, disjoint
  train / val / test draws: random quadratics (sec. 3.1) and a one-hidden-layer sigmoid MLP on
  scikit-learn's 8×8 digits (sec. 3.2's MNIST setting, on a smaller data set);
* :mod:`~algorithms.learned_opt.meta_train` -- meta-training by truncated BPTT, running a learned
  optimizer, and the hand-designed baselines (SGD, momentum, NAG, RMSprop, Adam) with learning
  rates tuned on training problems;
* :mod:`~algorithms.learned_opt.torch_optimizer` --
  :class:`~algorithms.learned_opt.torch_optimizer.LearnedOptimizer`, a trained LSTM as a
  ``torch.optim.Optimizer`` (its hidden states in the optimizer's state dict).

``benchmarks/learned_optimizer.py`` measures it against the baselines.
"""
