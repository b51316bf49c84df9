"""``python -m service.ray_node start --address=127.0.0.1:PORT --node-ip-address=127.0.0.1 ...``:
``ray start`` for a worker node that stays on loopback.

Ray keeps a node on 127.0.0.1 only with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (otherwise it
swaps a loopback address, the node's and the head's, for the machine's), and with that setting its
``ray start`` refuses to start a worker node at all (multi-node clusters are its Windows/macOS
opt-in).  This entry point runs Ray's own CLI with the loopback addresses kept as given and the
refusal lifted, for this process only; the node's daemons (raylet, agents, workers) inherit
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` from the environment ``metarl up`` gives them and bind
127.0.0.1, as the head's do.  ``tests/topology`` scans the listening sockets of such a cluster."""

from __future__ import annotations

import sys


def main() -> int:
    from ray._private import ray_constants, services

    def keep(host: str) -> str:  # services.resolve_ip_for_localhost, minus the swap
        if not host:
            raise ValueError(f"Malformed host: {host}")
        return host

    ray_constants.ENABLE_RAY_CLUSTER = True  # lifts `ray start`'s refusal of worker nodes
    services.resolve_ip_for_localhost = keep
    services.get_node_ip_address = lambda address=None: services.get_localhost_ip()
    from ray.scripts.scripts import main as ray_main

    return int(ray_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
