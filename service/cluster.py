"""The cluster as Ray's dashboard reports it: nodes with their total resources
(``/api/v0/nodes``, the state API) and what is in use (``/api/cluster_status``, the autoscaler's
load report: ``loadMetricsReport.usageByNode[node_id][resource] = [used, total]``).

The load report is written every few seconds by the head's monitor; a node it does not list yet
(the head seconds after start, a node that just joined) counts as idle."""

from __future__ import annotations

import logging
from typing import Any

from service.errors import unavailable
from service.launcher import LauncherError, RayLauncher
from service.schemas import ClusterPublic, NodePublic

log = logging.getLogger("metarl.service.cluster")

NODE_LIMIT = 10_000


def _result(payload: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def _used(usage: dict[str, Any], resource: str) -> float:
    pair = usage.get(resource)
    if isinstance(pair, list | tuple) and len(pair) == 2:
        return float(pair[0])
    return 0.0


def cluster_view(*, launcher: RayLauncher) -> ClusterPublic:
    """Nodes, CPUs and GPUs (alive nodes only in the totals) and what is free of them."""
    try:
        nodes_payload = launcher.get_json("/api/v0/nodes", params={"limit": NODE_LIMIT})
    except LauncherError as exc:
        raise unavailable(str(exc)) from exc
    rows = _result(nodes_payload, "data", "result", "result")
    if not isinstance(rows, list):
        raise unavailable(f"unexpected answer from the Ray dashboard's /api/v0/nodes: {str(nodes_payload)[:200]}")
    try:
        status = launcher.get_json("/api/cluster_status")
        by_node = _result(status, "data", "clusterStatus", "loadMetricsReport", "usageByNode") or {}
    except LauncherError as exc:  # totals are still worth showing; free capacity is then unknown
        log.warning("cluster status: %s", exc)
        by_node = {}

    nodes: list[NodePublic] = []
    cpus = gpus = cpus_free = gpus_free = 0.0
    for r in rows:
        total = r.get("resources_total") or {}
        alive = r.get("state") == "ALIVE"
        node = NodePublic(node_id=str(r.get("node_id", "")), address=str(r.get("node_ip", "")), alive=alive,
                          is_head=bool(r.get("is_head_node")), cpus=float(total.get("CPU", 0.0)),
                          gpus=float(total.get("GPU", 0.0)),
                          memory_gb=round(float(total.get("memory", 0.0)) / 1e9, 3))
        nodes.append(node)
        if not alive:
            continue
        usage = by_node.get(node.node_id) or {}
        cpus += node.cpus
        gpus += node.gpus
        cpus_free += max(node.cpus - _used(usage, "CPU"), 0.0)
        gpus_free += max(node.gpus - _used(usage, "GPU"), 0.0)
    nodes.sort(key=lambda n: (not n.is_head, not n.alive, n.address, n.node_id))
    return ClusterPublic(nodes=nodes, cpus=cpus, gpus=gpus, cpus_free=cpus_free, gpus_free=gpus_free)
