"""Supervised few-shot meta-learning: the data of an episode, the networks and the meta-learners
that train on such episodes.

Light modules (pydantic only; the registry imports them, the API process may):

* :mod:`~algorithms.supervised.data` -- :class:`~algorithms.supervised.data.SupportQuery`, one
  episode of one task (numpy);
* :mod:`~algorithms.supervised.specs` -- what the registrations share (the MAML-style inner-loop
  settings, the metrics, the meta-test plan);
* one module per algorithm with its spec and its registration: :mod:`~algorithms.supervised.sl_maml`
  (``"sl-maml"``), :mod:`~algorithms.supervised.anil`, :mod:`~algorithms.supervised.meta_sgd`
  (``"meta-sgd"``), :mod:`~algorithms.supervised.sl_reptile` (``"sl-reptile"``),
  :mod:`~algorithms.supervised.protonet`, :mod:`~algorithms.supervised.matching`.

Torch modules (imported where a learner runs):

* :mod:`~algorithms.supervised.nets` -- :class:`~algorithms.supervised.nets.NetSpec` and the MLP /
  conv4 networks, functional over a params dict;
* :mod:`~algorithms.supervised.learner` -- the learners' shared base (data, losses, metrics, the
  guarded outer update, meta-test, checkpoints);
* the learners: :mod:`~algorithms.supervised.maml_learner` (MAML, ANIL, Meta-SGD),
  :mod:`~algorithms.supervised.reptile_learner`, :mod:`~algorithms.supervised.protonet_learner`,
  :mod:`~algorithms.supervised.matching_learner`.
"""
