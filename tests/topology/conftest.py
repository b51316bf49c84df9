"""The production topology (``metarl up --topology cluster``), started once for the tests of this
directory in their own data dir: PostgreSQL, the S3 server, the MLflow server on both, a Ray head
with two worker nodes, two API processes.  Skip them with ``-m "not topology"``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service import local, topology

#: the API processes' METARL_MAX_ACTIVE_JOBS (the racing submissions test goes past it)
MAX_ACTIVE = 6
#: logical CPUs of each worker node: a job's four rollout workers fit on one node when the other is lost
CPUS_PER_NODE = 4


@dataclass
class Cluster:
    home: Path
    secrets: dict[str, str]

    @property
    def tp(self) -> topology.TopologyPaths:
        return topology.TopologyPaths(self.home)

    @property
    def paths(self) -> local.Paths:
        return local.Paths(self.home)

    def port(self, name: str) -> int:
        return int(topology.read_state(self.tp)["components"][name]["port"])

    def url(self, api: str) -> str:
        return f"http://127.0.0.1:{self.port(api)}"

    @property
    def key(self) -> str:
        return self.paths.admin_key.read_text().strip()

    def client(self, api: str = "api-1", *, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url(api), headers={"Authorization": f"Bearer {key or self.key}"},
                            timeout=60)

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port('mlflow')}"

    def db(self, dbname: str = "metarl"):  # noqa: ANN201 - a psycopg connection (autocommit)
        import psycopg

        if dbname == "metarl":
            user, password = "metarl", self.secrets["JOBS_DB_PASSWORD"]
        else:
            user, password = "postgres", self.secrets["POSTGRES_PASSWORD"]
        return psycopg.connect(host="127.0.0.1", port=self.port("postgres"), user=user, password=password,
                               dbname=dbname, autocommit=True, connect_timeout=5)

    def rows(self, sql: str, *args: object) -> list[tuple]:
        with self.db() as c:
            return c.execute(sql, args).fetchall()

    def up(self) -> list[local.Component]:
        """``metarl up --topology cluster`` again: restarts what is not running, on its ports."""
        return topology.up(self.home, workers=2, cpus_per_worker=CPUS_PER_NODE, say=lambda _: None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    mp = pytest.MonkeyPatch()
    for var in ("MLFLOW_TRACKING_URI", "METARL_ARTIFACT_ROOT", "RAY_ADDRESS", "METARL_DATABASE_URL", *topology.SECRETS):
        mp.delenv(var, raising=False)
    mp.setenv("METARL_POLL_INTERVAL_S", "0.5")  # the API processes inherit it
    mp.setenv("METARL_SSE_INTERVAL_S", "0.3")
    mp.setenv("METARL_MAX_ACTIVE_JOBS", str(MAX_ACTIVE))
    home = (tmp_path_factory.mktemp("topology") / "home").resolve()
    c = Cluster(home=home, secrets={})
    try:
        c.up()
        c.secrets = topology.load_secrets(c.tp, dev=False)
        yield c
    finally:
        topology.down(home, say=lambda _: None)
        shutil.rmtree(c.paths.private_tmp, ignore_errors=True)  # the Ray nodes' temp dirs, all inside it
        mp.undo()
