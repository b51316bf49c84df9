"""A hostile client against the API as users run it (``python -m service``: the real app served by
uvicorn on loopback, the HTTP framing real): bodies over the limit sent chunked, JSON nested past
any sane depth, header blocks of hundreds of KB; and the data dir that server leaves on disk, which
other users of the machine must not read.  No Ray is needed: every request here is refused before
a job would reach it."""

from __future__ import annotations

import os
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ports import free_port
from tests.service.conftest import LiveService
from tests.service.helpers import tiny_spec

LIMIT = 64 << 10  # METARL_MAX_BODY_BYTES of the server under test


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveService]:  # noqa: ANN001
    """The API on a data dir left by an older version: the dir 0755, its job store 0644."""
    home = tmp_path_factory.mktemp("hostile") / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    (home / "metarl.db").touch()
    os.chmod(home / "metarl.db", 0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("METARL_") and k != "MLFLOW_TRACKING_URI"}
    port = free_port()
    env.update({
        "METARL_HOME": str(home), "METARL_PORT": str(port),
        "METARL_RAY_DASHBOARD": f"http://127.0.0.1:{free_port()}",  # nothing listens: no job gets that far
        "METARL_RECONCILE_ON_START": "false", "METARL_ADAPT_SERVERS": "0",
        "METARL_MAX_BODY_BYTES": str(LIMIT), "MLFLOW_DISABLE_TELEMETRY": "true",
    })
    svc = LiveService(home=home, env=env, port=port)
    svc.start()
    yield svc
    svc.kill(signal.SIGTERM)


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.json()["error"]


def _chunks(total: int, size: int = 16 << 10) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


@pytest.mark.parametrize("size", [LIMIT + 1, 4 * LIMIT, 40 * LIMIT])
def test_a_streamed_body_over_the_limit_gets_413(server, size):  # noqa: ANN001
    with server.client() as c:
        r = c.post("/v1/jobs", content=_chunks(size), headers={"content-type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
    err = _error(r, 413)
    assert err["code"] == "too_large" and str(LIMIT) in err["message"], err


def test_a_declared_body_over_the_limit_gets_413(server):  # noqa: ANN001
    with server.client() as c:
        r = c.post("/v1/jobs", content=b" " * (LIMIT + 1), headers={"content-type": "application/json"})
    assert r.request.headers["content-length"] == str(LIMIT + 1)
    assert _error(r, 413)["code"] == "too_large"


def test_a_streamed_body_within_the_limit_reaches_the_route(server):  # noqa: ANN001
    """The guard reads a chunked body whole and hands it on unchanged: the route validates it."""
    import json

    body = json.dumps(tiny_spec(algorithm={"name": "dqn"})).encode()
    with server.client() as c:
        r = c.post("/v1/jobs", content=iter([body[:10], body[10:]]), headers={"content-type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    err = _error(r, 422)
    assert "algorithm" in err["message"], err


@pytest.mark.parametrize("body", [
    b"[" * 30_000 + b"]" * 30_000,  # far past the interpreter's recursion limit (and within the body limit)
    b"[" * 65 + b"]" * 65,  # just past the bound
    b'{"name": ' + b'{"a": ' * 70 + b"1" + b"}" * 71,
], ids=["30000-arrays", "65-arrays", "70-objects"])
def test_json_nested_too_deeply_gets_a_422_that_says_so(server, body):  # noqa: ANN001
    with server.client() as c:
        r = c.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    err = _error(r, 422)
    assert err["code"] == "invalid_request" and "nested deeper than 64" in err["message"], err
    assert err["details"] == [{"field": "body", "message": "JSON nested deeper than 64 levels",
                               "type": "json_too_deep"}]


def test_brackets_inside_strings_are_not_nesting(server):  # noqa: ANN001
    with server.client() as c:
        r = c.post("/v1/jobs", json=tiny_spec("[" * 500))
    err = _error(r, 422)
    assert "name" in err["message"] and "nested" not in err["message"], err


def _raw(port: int, request: bytes) -> bytes | None:
    """Send ``request`` and read the answer; None when the server reset the connection instead
    (it closes on a refused request whose bytes it did not all read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(request)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out
        except (ConnectionResetError, BrokenPipeError):
            return None


@pytest.mark.parametrize("size", [20 << 10, 200 << 10])
def test_a_header_block_over_the_limit_is_refused(server, size):  # noqa: ANN001
    request = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\nConnection: close\r\n\r\n")
    answer = _raw(server.port, request)
    # refused: a 431 (or the HTTP server's 400, or the connection reset), never an answer from a route
    assert answer is None or answer.split(b" ", 2)[1] in (b"400", b"431"), (answer or b"")[:300]
    small = _raw(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 10)
                 + b"\r\nConnection: close\r\n\r\n")
    assert small is not None and small.split(b" ", 2)[1] in (b"200", b"503"), (small or b"")[:300]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_and_its_stores_are_private(server):  # noqa: ANN001
    home = server.home
    assert _mode(home) == 0o700  # an existing 0755 data dir, tightened
    files = {p.name: _mode(p) for p in home.iterdir() if p.is_file() and p.name != "service.log"}
    for name in ("metarl.db", "mlflow.db", "admin.key", "key_secret", ".startup.lock"):
        assert name in files, sorted(files)
    assert {n: m for n, m in files.items() if m & 0o077} == {}, files
    with server.client() as c:  # the server keeps writing (WAL, locks) with the same modes
        c.get("/v1/jobs")
    assert {p.name: _mode(p) for p in home.iterdir() if _mode(p) & 0o077 and p.name != "service.log"} == {}


def test_the_pollers_lock_file_is_private_whatever_the_umask(tmp_path):
    """An app run in process (no ``python -m service`` umask) still creates its poller lock 0600."""
    import asyncio
    from types import SimpleNamespace

    from service.jobs import poll_forever

    settings = SimpleNamespace(home=tmp_path, poll_interval_s=0.01)
    app = SimpleNamespace(state=SimpleNamespace(settings=settings, store=None, launcher=None, view=None))
    lock = tmp_path / ".poller.lock"

    async def until_locked() -> None:
        task = asyncio.create_task(poll_forever(app))  # type: ignore[arg-type]
        while not lock.exists():
            await asyncio.sleep(0.01)
        task.cancel()

    old = os.umask(0o022)
    try:
        asyncio.run(until_locked())
    finally:
        os.umask(old)
    assert _mode(lock) == 0o600
