"""The HTTP client of the ``metarl`` CLI: one ``httpx.Client`` with the API key, JSON errors
turned into :class:`ClientError` with a message a user can act on, server-sent events, and
downloads.  No FastAPI, Ray or torch imports: the CLI starts fast."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
#: An event stream sends a keep-alive comment every 15 s; silence for this long means it is gone.
SSE_READ_TIMEOUT_S = 60.0


class ClientError(Exception):
    """A request failed: the API said no (``status`` set) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.hint = message, status, code, hint


class ConnectionFailed(ClientError):
    """Nothing answers at the API URL (or it stopped answering)."""


def default_home() -> Path:
    """The local data dir: ``METARL_HOME``, else ``~/.metarl`` (as :class:`service.settings.Settings`)."""
    return Path(os.environ.get("METARL_HOME") or Path.home() / ".metarl").expanduser()


def default_url(home: Path | None = None) -> str:
    """``METARL_API_URL`` is read by the CLI option; this is the fallback: the URL ``metarl up``
    recorded in ``<home>/api.url``, else the host and port the local service binds
    (``METARL_HOST`` / ``METARL_PORT``), else ``http://127.0.0.1:8000``."""
    try:
        recorded = ((home or default_home()) / "api.url").read_text().strip()
    except OSError:
        recorded = ""
    if recorded.startswith(("http://", "https://")):
        return recorded
    host = os.environ.get("METARL_HOST", "127.0.0.1")
    port = os.environ.get("METARL_PORT", "8000")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if not port.isdigit():
        return DEFAULT_URL
    return f"http://{host}:{port}"


def local_admin_key(home: Path | None = None) -> str | None:
    """The admin key the local service wrote on first start (``<home>/admin.key``), if readable."""
    path = (home or default_home()) / "admin.key"
    try:
        key = path.read_text().strip()
    except OSError:
        return None
    return key or None


def error_message(payload: Any, fallback: str) -> tuple[str, str | None]:
    """``(message, code)`` from an API error body ``{"error": {"code", "message", "details"}}``;
    field-level details (a 422) are folded into the one line."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        if isinstance(payload, dict) and "detail" in payload:
            return str(payload["detail"]), None
        return fallback, None
    message = str(err.get("message") or fallback)
    details = err.get("details")
    if isinstance(details, list):
        parts = [f"{d['field']}: {d.get('message', '')}".rstrip(": ") for d in details
                 if isinstance(d, dict) and d.get("field")]
        if parts:
            message = f"{message} ({'; '.join(dict.fromkeys(parts))})"
    return message, err.get("code")


@dataclass
class ApiClient:
    """The metarl REST API (``/v1``) at ``url`` with API ``key``."""

    url: str
    key: str | None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        headers["User-Agent"] = "metarl-cli"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ---------------------------------------------------------------------------
    def _unreachable(self, exc: Exception) -> ConnectionFailed:
        return ConnectionFailed(
            f"cannot reach the metarl API at {self.url} ({type(exc).__name__}: {exc or 'no answer'})",
            hint="start it with `metarl up`, or point the CLI elsewhere with --api / METARL_API_URL",
        )

    def _raise_for(self, r: httpx.Response) -> None:
        if r.status_code < 400:
            return
        try:
            payload = r.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        message, code = error_message(payload, f"HTTP {r.status_code} {r.reason_phrase}: {r.text[:200]}")
        if r.status_code == 404 and message == "Not Found":  # no such route (an older API?)
            message = f"{r.request.method} {r.request.url.path}: not found on {self.url}"
        hint = None
        if r.status_code == 401:
            hint = ("pass a key with --key / METARL_API_KEY; on the machine that runs the service the CLI reads "
                    f"{default_home() / 'admin.key'}")
        raise ClientError(message, status=r.status_code, code=code, hint=hint)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ClientError(f"the metarl API at {self.url} did not answer {method} {path} in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for(r)
        return r

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: Any = None, *, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, json=body, headers=headers).json()

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body).json()

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body).json()

    # ---- streams ------------------------------------------------------------------------------
    def events(self, path: str) -> Iterator[tuple[str, Any]]:
        """``(event, data)`` of a server-sent event stream until the server closes it.

        Raises:
            ConnectionFailed: the stream could not be opened or broke off (the caller may
                reconnect).
            ClientError: the API refused the request.
        """
        timeout = httpx.Timeout(self.timeout, read=SSE_READ_TIMEOUT_S)
        try:
            with self._http.stream("GET", path, timeout=timeout, headers={"Accept": "text/event-stream"}) as r:
                if r.status_code >= 400:
                    r.read()
                    self._raise_for(r)
                event: str | None = None
                data: list[str] = []
                for line in r.iter_lines():
                    if line.startswith(":"):
                        continue
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and event is not None:
                        text = "\n".join(data)
                        try:
                            payload = json.loads(text) if text else None
                        except json.JSONDecodeError:
                            payload = text
                        yield event, payload
                        event, data = None, []
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def download(self, path: str, dest: Path) -> int:
        """Stream ``path`` into the file ``dest``; returns the bytes written."""
        written = 0
        try:
            with self._http.stream("GET", path, timeout=httpx.Timeout(self.timeout, read=300.0)) as r:
                if r.status_code >= 400:
                    r.read()
                    self._raise_for(r)
                with dest.open("wb") as f:
                    for chunk in r.iter_bytes(1 << 16):
                        f.write(chunk)
                        written += len(chunk)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        return written
