"""Supervised few-shot meta-learning: the data of an episode (:mod:`algorithms.supervised.data`)
and, in the modules beside it, the networks and learners that meta-train on such episodes."""
