"""``POST /v1/models/{name}/adapt``: adapt a registered supervised model on the caller's support
set and predict its query set.

The API process holds no torch.  It resolves and authorises the version (404 for what the caller
may not see), refuses what is not a supervised model and arrays that are not arrays of numbers
within the limits (422 naming the field), then hands the call to a model server
(:mod:`workers.model.serving`): a child process of this API process, started on the first
request, reached over a Unix socket in a private directory with a per-process key.  There are
``METARL_ADAPT_SERVERS`` of them (a request waits for a free one, up to the timeout, then gets a
503); each keeps the last ``METARL_ADAPT_CACHE_MODELS`` models loaded.  A server that does not
answer within ``METARL_ADAPT_TIMEOUT_S`` is killed (504) and one that dies is replaced on the next
request (503): neither takes the API down, and the next request starts a fresh one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import numpy as np

from service import registry
from service.auth import Principal
from service.errors import ApiError, invalid_field, not_found, unavailable
from service.schemas import AdaptRequest, AdaptResponse
from service.settings import Settings
from service.tracking_view import TrackingView
from workers.adapt_protocol import AUTHKEY_ENV, MAX_EXAMPLES, MAX_VALUES, AdaptAnswer, AdaptCall

log = logging.getLogger("metarl.service.adapt")

#: seconds a new server may take to import its stack and listen
START_TIMEOUT_S = 120.0


def as_array(values: list[Any], field_name: str) -> np.ndarray:
    """``values`` (nested JSON lists) as a numeric array of examples, within the limits."""
    try:
        a = np.asarray(values)
    except ValueError:
        raise invalid_field(field_name, "must be a rectangular array: every example of the same shape") from None
    if a.dtype.kind not in "iuf":
        raise invalid_field(field_name, "must hold numbers only (no strings, booleans or nulls)")
    if a.ndim == 0 or a.shape[0] == 0:
        raise invalid_field(field_name, "must hold at least one example")
    if a.shape[0] > MAX_EXAMPLES:
        raise invalid_field(field_name, f"{a.shape[0]} examples; at most {MAX_EXAMPLES}")
    if a.size > MAX_VALUES:
        raise invalid_field(field_name, f"{a.size} numbers; at most {MAX_VALUES}")
    if a.dtype.kind == "f":
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise invalid_field(field_name, "must be finite (no NaN or inf, and within float32's range)")
    return a


# ---- the model servers -----------------------------------------------------------------------
@dataclass
class _Server:
    proc: subprocess.Popen
    conn: Connection
    directory: str

    def stop(self, *, grace_s: float = 5.0) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()  # the server's recv sees EOF and it exits
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.stop(grace_s=30)


class AdaptServers:
    """Up to ``size`` model server processes, started when first needed; :meth:`call` is
    blocking (run it in a thread) and safe from many threads at once."""

    def __init__(self, *, size: int, env: dict[str, str], timeout_s: float, cache_models: int, threads: int,
                 log_file: Path | None = None) -> None:
        self.size, self.env, self.timeout_s = size, env, timeout_s
        self.cache_models, self.threads, self.log_file = cache_models, threads, log_file
        self._idle: queue.Queue[_Server] = queue.Queue()
        self._lock = threading.Lock()
        self._live: list[_Server] = []
        self._starting = 0
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AdaptServers:
        return cls(size=settings.adapt_servers, env=settings.mlflow_env(), timeout_s=settings.adapt_timeout_s,
                   cache_models=settings.adapt_cache_models, threads=settings.adapt_threads,
                   log_file=settings.home / "adapt-servers.log")

    def _start(self) -> _Server:
        directory = tempfile.mkdtemp(prefix="metarl-adapt-")  # mode 0700: the socket is this user's only
        address = os.path.join(directory, "socket")
        key = secrets.token_bytes(32)
        env = {**os.environ, **self.env, AUTHKEY_ENV: key.hex(), "OMP_NUM_THREADS": str(self.threads)}
        out: Any = subprocess.DEVNULL
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_file, "ab")  # noqa: SIM115 - the child holds its own copy; ours closes below
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workers.model.serving", "--socket", address,
                 "--cache-models", str(self.cache_models), "--threads", str(self.threads)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                shutil.rmtree(directory, ignore_errors=True)
                raise unavailable(f"the model server exited at start (code {proc.returncode}); see {self.log_file}")
            if os.path.exists(address):
                try:
                    conn = Client(address, family="AF_UNIX", authkey=key)
                    break
                except (ConnectionRefusedError, FileNotFoundError):
                    pass
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=30)
                shutil.rmtree(directory, ignore_errors=True)
                raise unavailable(f"the model server did not start within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        log.info("model server %d started (%.1f s)", proc.pid, START_TIMEOUT_S - (deadline - time.monotonic()))
        return _Server(proc=proc, conn=conn, directory=directory)

    def _checkout(self) -> _Server:
        with self._lock:
            if self._closed:
                raise unavailable("the API is shutting down")
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            grow = len(self._live) + self._starting < self.size
            if grow:
                self._starting += 1
        if grow:
            try:
                server = self._start()
            finally:
                with self._lock:
                    self._starting -= 1
            with self._lock:
                closed = self._closed
                if not closed:
                    self._live.append(server)
            if closed:
                server.stop()
                raise unavailable("the API is shutting down")
            return server
        try:
            return self._idle.get(timeout=self.timeout_s)
        except queue.Empty:
            raise ApiError(503, "busy", f"all {self.size} model server(s) busy for {self.timeout_s:.0f} s; retry "
                                        "later") from None

    def _forget(self, server: _Server) -> None:
        with self._lock:
            if server in self._live:
                self._live.remove(server)
        server.kill()

    def call(self, call: AdaptCall) -> AdaptAnswer:
        """Send ``call`` to a free server and wait for its answer (504 after the timeout: that
        server is killed; 503 if it died: the next request starts another)."""
        server = self._checkout()
        try:
            server.conn.send(call)
            if not server.conn.poll(self.timeout_s):
                self._forget(server)
                raise ApiError(504, "timeout", f"the model server did not answer within {self.timeout_s:.0f} s")
            answer = server.conn.recv()
        except (EOFError, OSError) as exc:
            self._forget(server)
            raise unavailable(f"the model server stopped while serving this request ({exc.__class__.__name__}); "
                              "retry") from exc
        except BaseException:
            self._forget(server)
            raise
        with self._lock:
            closed = self._closed
        if closed:
            server.stop()
        else:
            self._idle.put(server)
        return answer

    def close(self) -> None:
        """Stop every server (idle ones now; busy ones when their request returns)."""
        with self._lock:
            self._closed = True
            servers = list(self._live)
            self._live = []
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
        for s in servers:
            s.stop()


# ---- the request -------------------------------------------------------------------------------
def adapt(*, view: TrackingView, servers: AdaptServers, principal: Principal, name: str,
          request: AdaptRequest) -> AdaptResponse:
    """Resolve, authorise and check; adapt on a model server; the predictions."""
    mv = registry.resolve_version_entity(view=view, principal=principal, name=name, version=request.version,
                                         alias=request.alias)
    algorithm = (mv.tags or {}).get(registry.ALGORITHM_TAG)
    kind = registry.algorithm_kind(mv)
    if kind != "supervised":
        what = f"an RL model ({algorithm})" if kind is not None else f"not a model this service knows ({algorithm})"
        raise invalid_field("name", f"{name} version {mv.version} is {what}; adapt serves supervised models "
                              "(RL policies adapt on episodes: MetaPolicy.load(uri).adapt(task))")
    support_x = as_array(request.support_x, "support_x")
    support_y = as_array(request.support_y, "support_y")
    query_x = as_array(request.query_x, "query_x")
    if len(support_y) != len(support_x):
        raise invalid_field("support_y", f"{len(support_y)} labels or targets for {len(support_x)} support examples")
    if servers.size == 0:
        raise unavailable("adapting is switched off on this server (METARL_ADAPT_SERVERS=0)")
    uri = f"models:/{mv.name}/{mv.version}"
    answer = servers.call(AdaptCall(uri=uri, support_x=support_x, support_y=support_y, query_x=query_x,
                                    steps=request.steps, probabilities=request.probabilities))
    if not answer.ok:
        if answer.failure == "invalid":
            raise invalid_field(answer.field_name or "body", answer.message)
        if answer.failure == "not_found":
            raise not_found("model version", f"{mv.name}/{mv.version}")
        if answer.failure == "unsupported":
            raise invalid_field("name", answer.message)
        raise ApiError(500, "internal", f"adapting failed: {answer.message}")
    assert answer.predictions is not None and answer.problem is not None
    return AdaptResponse(
        model_name=mv.name, model_version=str(mv.version), algorithm=answer.algorithm or str(algorithm),
        problem=answer.problem, steps=answer.steps, predictions=answer.predictions.tolist(),
        probabilities=None if answer.probabilities is None else answer.probabilities.tolist(),
        timings_ms={k.removesuffix("_s") + "_ms": round(v * 1e3, 3) for k, v in answer.timings.items()},
    )
