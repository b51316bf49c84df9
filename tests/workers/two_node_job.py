"""Run by tests/workers/test_cluster.py in its own process: a simulated two-node Ray cluster
(``ray.cluster_utils.Cluster``), a job whose rollout actors spread over both nodes, and the
worker node removed in the middle of an iteration.  Prints one JSON line with what happened."""

from __future__ import annotations

import json
import sys

import ray
from ray.cluster_utils import Cluster

from workers import tracking
from workers.contract import JobSpec
from workers.driver import DriverHooks, run_job


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    spec = JobSpec.model_validate({
        "name": "two-node",
        "algorithm": {"name": "maml"},
        "task_family": {"name": "navigation2d"},
        "policy": {"hidden_sizes": [32, 32]},
        "meta_batch_size": 4, "episodes_per_task": 4, "iterations": 4, "checkpoint_every": 2,
        "resources": {"rollout_workers": 2, "envs_per_worker": 8},
        "register_as": "two-node",
    })
    removed: dict[str, object] = {}

    def remove_worker_node(pool, label):  # noqa: ANN001
        if label == "2:train0" and not removed:
            removed["nodes_before"] = sorted({ray.get(a.info.remote())["node_id"] for a in pool.actors})
            sys.stderr.write(f"head={cluster.head_node.node_id} worker={worker.node_id} "
                             f"actors={removed['nodes_before']}\n")
            cluster.remove_node(worker)
            removed["node"] = worker.node_id

    result = run_job(spec, hooks=DriverHooks(on_submit=remove_worker_node))
    nodes_per_iteration = {
        m.step: m.value for m in tracking.client().get_metric_history(result.run_id, "perf/nodes")
    }
    sys.stdout.write(json.dumps({
        "status": result.status,
        "iterations": result.iterations,
        "nodes_before_removal": removed.get("nodes_before"),
        "removed_node": removed.get("node"),
        "nodes_used": result.nodes,
        "nodes_per_iteration": nodes_per_iteration,
        "model_uri": result.model_uri,
    }) + "\n")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
