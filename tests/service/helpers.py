"""Client-side helpers for the service tests: specs, polling with deadlines, an SSE reader."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx


def tiny_spec(name: str = "svc-nav", **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "algorithm": {"name": "maml", "inner_lr": 0.1},
        "task_family": {"name": "navigation2d"},
        "policy": {"hidden_sizes": [16, 16]},
        "meta_batch_size": 4,
        "episodes_per_task": 4,
        "iterations": 3,
        "checkpoint_every": 1,
        "resources": {"rollout_workers": 1, "envs_per_worker": 16},
        "register_as": name,
    }
    spec.update(over)
    return spec


def wait_for(fn: Callable[[], Any], *, timeout: float, what: str, every: float = 0.3) -> Any:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}")
    r.raise_for_status()
    return r.json()


def wait_status(client: httpx.Client, job_id: str, statuses: set[str], *, timeout: float = 240) -> dict[str, Any]:
    return wait_for(lambda: (j := job(client, job_id))["status"] in statuses and j, timeout=timeout,
                    what=f"job {job_id} to reach {sorted(statuses)}")


def wait_evaluation(client: httpx.Client, eval_id: str, *, timeout: float = 300) -> dict[str, Any]:
    """The evaluation once it has finished (SUCCEEDED, FAILED or STOPPED)."""

    def finished() -> dict[str, Any] | None:
        e = client.get(f"/v1/evaluations/{eval_id}").json()
        return e if e["status"] in ("SUCCEEDED", "FAILED", "STOPPED") else None

    return wait_for(finished, timeout=timeout, what=f"evaluation {eval_id} to finish", every=1.0)


def sse(client: httpx.Client, path: str, *, timeout: float = 300) -> Iterator[tuple[str, Any]]:
    """``(event, data)`` pairs of a server-sent event stream until it closes."""
    for _, event, data in sse_events(client, path, timeout=timeout):
        yield event, data


def sse_events(client: httpx.Client, path: str, *, timeout: float = 300,
               last_event_id: str | None = None) -> Iterator[tuple[str | None, str, Any]]:
    """``(id, event, data)`` of a server-sent event stream until it closes; ``last_event_id``:
    resume as an EventSource reconnecting does (the ``Last-Event-ID`` header)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    with client.stream("GET", path, headers=headers, timeout=httpx.Timeout(timeout, connect=10)) as r:
        r.raise_for_status()
        assert r.headers["content-type"].startswith("text/event-stream")
        ident, event, data = None, None, []
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if line.startswith("id:"):
                ident = line.split(":", 1)[1].strip()
            elif line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif line == "" and event is not None:
                yield ident, event, json.loads("\n".join(data))
                ident, event, data = None, None, []
