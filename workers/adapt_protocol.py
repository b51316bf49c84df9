"""What the API's adapt endpoint and its model server say to each other (a light module: numpy
only, no torch -- the API process imports it).

``POST /v1/models/{name}/adapt`` adapts a registered supervised model on a caller's support set
and predicts a query set.  The API process holds no torch: it resolves and authorises the model
version, checks the request, and hands an :class:`AdaptCall` to a model server process
(:mod:`workers.model.serving`, one or more per API process, over a private Unix socket); the
server loads the version once (an LRU cache: versions are immutable), adapts, predicts, and
answers an :class:`AdaptAnswer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

#: examples in a support set or a query set
MAX_EXAMPLES = 1000
#: numbers in one array of a request (examples x values per example)
MAX_VALUES = 1_000_000
#: inner steps a request may ask for
MAX_STEPS = 100
#: models one server process keeps loaded
DEFAULT_CACHE_MODELS = 8
#: the environment variable that hands a server its connection's key
AUTHKEY_ENV = "METARL_ADAPT_AUTHKEY"

#: ``invalid``: the request does not fit the model (a 422 naming ``field``); ``not_found``: the
#: version is gone; ``unsupported``: not a supervised model; ``internal``: anything else
FailureKind = Literal["invalid", "not_found", "unsupported", "internal"]


@dataclass(frozen=True)
class AdaptCall:
    """Adapt ``uri`` (``models:/NAME/VERSION``) on ``support_x``/``support_y``, predict ``query_x``.

    ``support_x``/``query_x`` are float32 ``[N, ...]`` (the model's input shape, or one flat
    vector of its size per example); ``support_y`` int64 class indices ``[N]`` or float32
    regression targets ``[N]``/``[N, out_dim]``.  ``steps``: inner steps (None: the model's
    meta-test default).  ``probabilities``: a classifier also returns class probabilities."""

    uri: str
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    steps: int | None = None
    probabilities: bool = False


@dataclass(frozen=True)
class AdaptAnswer:
    """A server's answer: predictions (``ok``) or a failure a client can act on."""

    ok: bool
    problem: Literal["classification", "regression"] | None = None
    algorithm: str | None = None
    steps: int | None = None
    predictions: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    failure: FailureKind | None = None
    #: the request field a refusal is about (``invalid``)
    field_name: str | None = None
    message: str = ""
    #: seconds the server spent: loading the model (0 when cached), adapting and predicting
    timings: dict[str, float] = field(default_factory=dict)


def failed(kind: FailureKind, message: str, *, field_name: str | None = None) -> AdaptAnswer:
    return AdaptAnswer(ok=False, failure=kind, field_name=field_name, message=message)
