"""The model server behind ``POST /v1/models/{name}/adapt``: one process that loads registered
supervised models and adapts them on callers' support sets.

The API process starts it (``python -m workers.model.serving --socket PATH``), with the
connection's key in ``$METARL_ADAPT_AUTHKEY`` and the MLflow settings in its environment; it
listens on the Unix socket ``PATH``, accepts one connection (its API process's) and answers
:class:`~workers.adapt_protocol.AdaptCall` after :class:`~workers.adapt_protocol.AdaptCall`, one
at a time, until that connection closes.  Loaded models stay in an LRU cache (``--cache-models``;
a registered version never changes, so a cached one is never stale).

What a request may hold is checked where the model is known (:meth:`SupervisedMetaModel.adapt`
and ``predict``): input shapes, label ranges, finiteness, steps; each refusal names its field.
Two conveniences for JSON callers: an input may be given as one flat vector per example (a digit
as 64 numbers rather than ``[1, 8, 8]``), and a one-dimensional regression target as ``[N]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from collections import OrderedDict
from multiprocessing.connection import Listener

import numpy as np
import torch

from workers.adapt_protocol import AUTHKEY_ENV, DEFAULT_CACHE_MODELS, AdaptAnswer, AdaptCall, failed
from workers.model.policy import BaseMetaPolicy, MetaPolicy, ModelFormatError
from workers.model.supervised import SupervisedMetaModel
from workers.model.uris import ModelNotFoundError

log = logging.getLogger("metarl.serving")

#: the request fields a refusal of the model's can name (its messages start with them)
FIELDS = ("support_x", "support_y", "query_x", "steps")


class ModelCache:
    """The last ``size`` models loaded, by URI."""

    def __init__(self, size: int = DEFAULT_CACHE_MODELS) -> None:
        if size < 1:
            raise ValueError(f"the cache holds at least one model, got {size}")
        self.size = size
        self._models: OrderedDict[str, BaseMetaPolicy] = OrderedDict()
        self.loads = 0

    def get(self, uri: str) -> tuple[BaseMetaPolicy, bool]:
        """The model at ``uri`` and whether it was cached."""
        if uri in self._models:
            self._models.move_to_end(uri)
            return self._models[uri], True
        model = MetaPolicy.load(uri)
        self.loads += 1
        self._models[uri] = model
        if len(self._models) > self.size:
            self._models.popitem(last=False)
        return model, False


def _field_of(message: str) -> str | None:
    m = re.match(r"\s*(\w+)", message)
    return m.group(1) if m and m.group(1) in FIELDS else None


def _as_examples(model: SupervisedMetaModel, x: np.ndarray) -> np.ndarray:
    """``x`` reshaped to the model's input shape when it holds one flat vector per example."""
    shape = model.input_shape
    if x.ndim == 2 and len(shape) > 1 and x.shape[1] == int(np.prod(shape)):
        return x.reshape((x.shape[0], *shape))
    return x


def _as_targets(model: SupervisedMetaModel, y: np.ndarray) -> np.ndarray:
    if not model.classification and y.ndim == 1 and model.output_dim == 1:
        return y.reshape(-1, 1)
    return y


def handle(call: AdaptCall, cache: ModelCache) -> AdaptAnswer:
    """Adapt and predict; every failure becomes an answer (the server keeps serving)."""
    t0 = time.perf_counter()
    try:
        model, cached = cache.get(call.uri)
    except ModelNotFoundError as exc:
        return failed("not_found", str(exc))
    except ModelFormatError as exc:
        return failed("unsupported", f"{call.uri} is not a model this server can load: {exc}")
    if not isinstance(model, SupervisedMetaModel):
        return failed("unsupported", f"{call.uri} is an RL policy ({model.algorithm}); adapt serves supervised "
                                     "models (RL policies adapt on episodes: MetaPolicy.load(uri).adapt(task))")
    t1 = time.perf_counter()
    try:
        if call.steps is not None and model.default_steps is None:
            return failed("invalid", f"steps: {model.algorithm} takes no inner steps (it adapts by embedding the "
                                     "support set); leave steps unset", field_name="steps")
        if call.probabilities and not model.classification:
            return failed("invalid", "probabilities: this model does regression; it has no class probabilities",
                          field_name="probabilities")
        adapted = model.adapt(_as_examples(model, call.support_x), _as_targets(model, call.support_y),
                              steps=call.steps)
        t2 = time.perf_counter()
        query = _as_examples(model, call.query_x)
        predictions = adapted.predict(query)
        probabilities = adapted.predict_proba(query) if call.probabilities else None
    except (ValueError, TypeError) as exc:
        return failed("invalid", str(exc), field_name=_field_of(str(exc)))
    t3 = time.perf_counter()
    return AdaptAnswer(ok=True, problem=model.problem, algorithm=model.algorithm, steps=adapted.adapted_steps or None,
                       predictions=predictions, probabilities=probabilities,
                       timings={"load_s": 0.0 if cached else t1 - t0, "adapt_s": t2 - t1, "predict_s": t3 - t2})


def serve(address: str, authkey: bytes, *, cache_models: int = DEFAULT_CACHE_MODELS) -> None:
    """Listen on the Unix socket ``address``, accept one connection, answer until it closes."""
    cache = ModelCache(cache_models)
    with Listener(address, family="AF_UNIX", authkey=authkey) as listener:
        conn = listener.accept()
        log.info("model server on %s: connected", address)
        with conn:
            while True:
                try:
                    call = conn.recv()
                except (EOFError, OSError):
                    return
                if not isinstance(call, AdaptCall):
                    conn.send(failed("internal", f"expected an AdaptCall, got {type(call).__name__}"))
                    continue
                try:
                    answer = handle(call, cache)
                except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
                    log.exception("adapt %s", call.uri)
                    answer = failed("internal", f"{type(exc).__name__}: {exc}")
                conn.send(answer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.model.serving",
                                     description="the model server behind POST /v1/models/{name}/adapt")
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    parser.add_argument("--cache-models", type=int, default=DEFAULT_CACHE_MODELS, help="models kept loaded")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    key = os.environ.pop(AUTHKEY_ENV, "")
    if not key:
        parser.error(f"${AUTHKEY_ENV} (the connection's key, hex) is not set")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(max(1, args.threads))
    serve(args.socket, bytes.fromhex(key), cache_models=args.cache_models)


if __name__ == "__main__":
    main()
