"""The `metarl` CLI against a real API server (``live_service``: uvicorn in its own process, the
session's Ray head with its job server, a real MLflow store), plus unit tests of spec overrides."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service import local, presets
from service.cli import app, parse_model_ref
from service.client import ApiClient, ClientError
from tests.ports import free_port
from tests.service.helpers import tiny_spec

runner = CliRunner()
MODEL = "cli-nav"


def metarl(*args: str, svc=None, url: str | None = None, key: str | None = None, home: Path | None = None):  # noqa: ANN001
    env = {"COLUMNS": "200", "METARL_API_URL": url or (svc.url if svc else None),
           "METARL_API_KEY": key or (svc.admin_key if svc else None), "METARL_HOME": str(home) if home else None}
    result = runner.invoke(app, list(args), env=env)  # None: unset
    assert "Traceback" not in result.output, result.output
    return result



# ---- no server ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("item", "path", "value"), [
    ("iterations=5", ["iterations"], 5),
    ("resources.rollout_workers=2", ["resources", "rollout_workers"], 2),
    ("algorithm.inner_lr=0.05", ["algorithm", "inner_lr"], 0.05),
    ("algorithm.first_order=true", ["algorithm", "first_order"], True),
    ("policy.hidden_sizes=[32, 32]", ["policy", "hidden_sizes"], [32, 32]),
    ("name=my-job", ["name"], "my-job"),
    ("task_family.env_name = reach-v3", ["task_family", "env_name"], "reach-v3"),
    ("register_as=null", ["register_as"], None),
    ("name=a=b", ["name"], "a=b"),
])
def test_parse_override(item, path, value):
    assert presets.parse_override(item) == (path, value)


@pytest.mark.parametrize("item", ["iterations", "=5", "a..b=1", ".a=1", "a.=1"])
def test_parse_override_rejects(item):
    with pytest.raises(presets.SpecError, match="KEY=VALUE"):
        presets.parse_override(item)


def test_apply_overrides_nested_and_validated():
    base = presets.load_preset("navigation2d-maml").spec
    spec = presets.apply_overrides(base, ["iterations=5", "resources.rollout_workers=1", "algorithm.outer.max_kl=0.02",
                                          "advantage.gamma=0.9"])
    assert spec["iterations"] == 5 and spec["resources"]["rollout_workers"] == 1
    assert spec["algorithm"]["outer"]["max_kl"] == 0.02 and spec["advantage"] == {"gamma": 0.9}
    assert base["iterations"] == 100  # the preset itself is untouched
    presets.validate(spec)
    with pytest.raises(presets.SpecError, match="iterations"):
        presets.validate(presets.apply_overrides(base, ["iterations=0"]))
    with pytest.raises(presets.SpecError, match=r"resources\.bogus"):
        presets.validate(presets.apply_overrides(base, ["resources.bogus=1"]))
    with pytest.raises(presets.SpecError, match="not an object"):
        presets.apply_overrides(base, ["iterations.x=1"])


def test_parse_model_ref():
    assert parse_model_ref("nav@champion") == ("nav", None, "champion")
    assert parse_model_ref("nav/3") == ("nav", "3", None)
    assert parse_model_ref("models:/nav/3") == ("nav", "3", None)
    assert parse_model_ref("nav") == ("nav", None, "latest")


def test_presets_listed_and_valid():
    r = metarl("presets")
    assert r.exit_code == 0, r.output
    for name in ("navigation2d-maml-demo", "navigation2d-maml", "halfcheetah-vel-maml", "ml1-reach-maml",
                 "rl2-ml1-reach", "rl2-ml1-push", "rl2-ml10", "rl2-halfcheetah-vel"):
        assert name in r.output
        presets.validate(presets.load_preset(name).spec)
    r = metarl("presets", "navigation2d-maml-demo")
    assert r.exit_code == 0 and json.loads(r.output)["register_as"] == "navigation2d-maml-demo"
    r = metarl("jobs", "submit", "--preset", "no-such-preset")
    assert r.exit_code == 1 and "no preset named 'no-such-preset'" in r.output


def test_tables_are_whole_when_the_output_is_not_a_terminal():
    """Piped output (no terminal, no COLUMNS) is not cut to rich's 80 columns."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-m", "service.cli", "presets"], env=env, capture_output=True, text=True,
                         check=True).stdout
    for p in presets.presets():
        assert p.name in out, f"{p.name} cut in:\n{out}"
        if p.spec.get("register_as"):
            assert str(p.spec["register_as"]) in out
    assert "…" not in out


def test_demo_snippets_name_the_store_and_the_data_dir(tmp_path):
    from service.cli import demo_snippets

    text = demo_snippets("models:/nav/3", episodes=20, home=tmp_path, store=f"sqlite:///{tmp_path}/mlflow.db",
                         python=".venv/bin/python")
    assert f"METARL_HOME={tmp_path} .venv/bin/python" in text  # MetaPolicy finds the store by the data dir
    assert f"MLFLOW_TRACKING_URI=sqlite:///{tmp_path}/mlflow.db .venv/bin/python -c" in text  # plain MLflow by the URI
    assert 'MetaPolicy.load("models:/nav/3")' in text and "adapt(task, episodes=20)" in text and "print(" in text
    default = demo_snippets("models:/nav/3", episodes=20, home=Path.home() / ".metarl", store="sqlite:///x",
                            python="python")
    assert "METARL_HOME" not in default


def test_connection_refused_is_one_clear_line():
    url = f"http://127.0.0.1:{free_port()}"
    r = metarl("jobs", "list", url=url, key="mrl_x")
    assert r.exit_code == 1
    assert f"cannot reach the metarl API at {url}" in r.output and "metarl up" in r.output


# ---- what a job shows: the metrics its algorithm declares (no server: a scripted event stream) -------
class ScriptedClient:
    """What ``watch_job`` reads of the API: the job, then its event stream."""

    def __init__(self, job: dict, events: list[tuple[str, dict]]) -> None:
        self.job, self._events = job, events

    def get(self, path: str, **params: object) -> dict:
        return self.job

    def events(self, path: str):  # noqa: ANN201
        yield from self._events


def _scripted(algorithm: str, steps: list[dict]) -> ScriptedClient:
    from workers.contract import declared_metrics

    job = {"id": "job-0123456789ab", "name": f"{algorithm}-job", "status": "RUNNING", "message": None, "attempt": 1,
           "progress": {"iteration": 0, "iterations": len(steps)}, "run_id": "run-1", "model_uri": None,
           "created_at": "2026-01-01T00:00:00Z", "finished_at": None, "metrics_declared": declared_metrics(algorithm)}
    end = {**job, "status": "SUCCEEDED", "progress": {"iteration": len(steps), "iterations": len(steps)},
           "model_uri": f"models:/{algorithm}-job/1", "finished_at": "2026-01-01T00:01:05Z"}
    events = [("status", job)] + [("metrics", {"step": i, "metrics": m}) for i, m in enumerate(steps)]
    return ScriptedClient(job, events + [("end", end)])


def _watched(client: ScriptedClient, capsys) -> str:  # noqa: ANN001
    from service.cli.jobs import summary, watch_job

    summary(watch_job(client, client.job["id"]))
    return capsys.readouterr().out


def test_a_maml_job_shows_its_returns_before_and_after_adaptation(capsys):
    steps = [{"meta/return_pre": -69.64, "meta/return_post": -41.71, "perf/env_steps_per_s": 1234.4},
             {"meta/return_pre": -60.0, "meta/return_post": -30.26, "perf/env_steps_per_s": 2000.0}]
    out = _watched(_scripted("maml", steps), capsys)
    assert "iteration 1/2  return -69.6 → -41.7  1,234 steps/s" in out, out
    assert "iteration 2/2  return -60.0 → -30.3  2,000 steps/s" in out, out
    assert re.search(r"return before adaptation\s+-69\.6 → -60\.0", out), out  # first → last
    assert re.search(r"return after adaptation\s+-41\.7 → -30\.3", out), out
    assert re.search(r"env steps/s \(mean\)\s+1,617", out), out
    assert "success" not in out  # declared, never logged (navigation): not shown
    assert out.count("models:/maml-job/1") == 1 and "model URI: models:/maml-job/1" in out


def test_a_multitask_job_shows_its_own_metrics(capsys):
    steps = [{"meta/return_pre": -3.5, "meta/success_pre": 0.25}, {"meta/return_pre": -2.0, "meta/success_pre": 0.5}]
    out = _watched(_scripted("multitask-pg", steps), capsys)
    assert "iteration 1/2  return -3.5  success 0.25" in out, out
    assert re.search(r"\breturn\s+-3\.5 → -2\.0", out) and re.search(r"\bsuccess\s+0\.25 → 0\.50", out), out
    assert "adaptation" not in out and "steps/s" not in out


def test_a_supervised_job_counts_examples_not_env_steps():
    from service.cli.output import bar_stats, metric_stats, throughput_unit
    from workers.contract import declared_metrics

    sup = {"spec": {"task_family": {"name": "digits-rotations"}}}
    assert throughput_unit(sup) == "examples" and throughput_unit({"spec": {"task_family": {"name": "navigation2d"}}}) \
        == "steps"
    assert throughput_unit({"spec": {}}) == "steps"
    logged = {"meta/accuracy": 0.75, "loss/query": 0.6, "perf/env_steps_per_s": 4e3}
    line = metric_stats(logged, declared_metrics("protonet"), unit="examples")
    assert line == "query accuracy after adaptation 0.750  query loss (the outer loss) 0.600  4,000 examples/s"
    assert "return" not in line and "success" not in line
    assert bar_stats(logged, declared_metrics("protonet"), unit="examples").endswith("4k examples/s")


def test_declared_metrics_in_the_bar_the_evaluation_and_the_version_table():
    from service.cli.models import _version_columns, summary_rows
    from service.cli.output import bar_stats, headlines, metric_stats
    from workers.contract import declared_metrics

    maml = declared_metrics("maml")
    logged = {"meta/return_pre": -5.0, "meta/return_post": 12.25, "meta/success_post": 0.5, "perf/env_steps_per_s": 9e3}
    assert [h.keys for h in headlines(maml)] == [("meta/return_pre", "meta/return_post"), ("meta/success_post",)]
    assert bar_stats(logged, maml) == "-5.0→12.2 succ 0.50 9k steps/s"
    assert metric_stats(logged, maml) == "return -5.0 → 12.2  success after adaptation 0.50  9,000 steps/s"
    assert metric_stats(logged, []) == "9,000 steps/s"  # an algorithm declaring nothing: throughput only
    rows = summary_rows({"return_post": 12.34, "return_pre": -5.0, "other_thing": 1}, maml)
    assert rows == [("return before adaptation", "-5.0"), ("return after adaptation", "12.3"), ("other thing", "1.00")]
    versions = [{"metrics_declared": maml, "metrics": {"meta/return_post": 1.0}, "tags": {"return_pre": "-2.0"}}]
    assert [m["key"] for m in _version_columns(versions)] == ["meta/return_pre", "meta/return_post"]


# ---- against the live service ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def watched(live_service, tmp_path_factory):  # noqa: ANN001
    """One tiny job submitted from a spec file with --watch (the CLI's whole happy path)."""
    spec = tiny_spec(MODEL, iterations=2, checkpoint_every=1)
    path = tmp_path_factory.mktemp("spec") / "tiny.json"
    path.write_text(json.dumps(spec))
    r = metarl("jobs", "submit", str(path), "--watch", svc=live_service)
    job_id = r.output.split("submitted job ", 1)[1].split()[0] if "submitted job " in r.output else None
    return r, job_id


def test_submit_watch_to_succeeded(watched):
    r, job_id = watched
    assert r.exit_code == 0, r.output
    assert job_id and job_id.startswith("job-")
    assert "iteration 1/2" in r.output and "iteration 2/2" in r.output and "return" in r.output
    assert "SUCCEEDED" in r.output
    assert f"model URI: models:/{MODEL}/1" in r.output
    assert r.output.count(f"models:/{MODEL}/1") == 1, r.output  # said once, not in the table and again below it
    assert "success" not in r.output  # navigation has no success signal: no column of zeros


def test_list_show_and_models(live_service, watched):  # noqa: ANN001
    _, job_id = watched
    r = metarl("jobs", "list", svc=live_service)
    assert r.exit_code == 0 and job_id in r.output and "SUCCEEDED" in r.output
    r = metarl("jobs", "list", "--status", "failed", svc=live_service)
    assert r.exit_code == 0 and job_id not in r.output
    r = metarl("jobs", "show", job_id, svc=live_service)
    assert r.exit_code == 0 and "SUCCEEDED" in r.output and f"models:/{MODEL}/1" in r.output
    assert "meta/return_post" in r.output
    shown = json.loads(metarl("jobs", "show", job_id, "--json", svc=live_service).output)
    assert shown["id"] == job_id and shown["progress"]["iteration"] == 2
    r = metarl("jobs", "logs", job_id, "--tail", "5", svc=live_service)
    assert r.exit_code == 0 and "SUCCEEDED" in r.output
    r = metarl("models", "list", svc=live_service)
    assert r.exit_code == 0 and MODEL in r.output
    r = metarl("models", "versions", MODEL, svc=live_service)
    assert r.exit_code == 0 and MODEL in r.output


def test_alias_and_pull(live_service, watched, tmp_path):  # noqa: ANN001
    r = metarl("models", "alias", MODEL, "champion", "1", svc=live_service)
    assert r.exit_code == 0, r.output
    r = metarl("models", "pull", f"{MODEL}@champion", "-o", str(tmp_path / "pulled"), svc=live_service)
    assert r.exit_code == 0, r.output
    from workers.model import MetaPolicy

    cards = list((tmp_path / "pulled").rglob("policy.json"))
    assert cards, r.output
    policy = MetaPolicy.load(str(cards[0].parent))
    assert policy.act([0.0, 0.0]).shape == (2,)
    r = metarl("models", "pull", f"{MODEL}@nope", "-o", str(tmp_path / "x"), svc=live_service)
    assert r.exit_code == 1 and "no alias 'nope'" in r.output


def test_invalid_spec_file_names_the_field(live_service, tmp_path):  # noqa: ANN001
    with live_service.client() as c:
        before = c.get("/v1/jobs").json()["count"]
    bad = tiny_spec("bad", iterations=-1, surprise=1)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    r = metarl("jobs", "submit", str(path), svc=live_service)
    assert r.exit_code != 0
    assert "iterations" in r.output and "surprise" in r.output
    (tmp_path / "broken.json").write_text("{not json")
    r = metarl("jobs", "submit", str(tmp_path / "broken.json"), svc=live_service)
    assert r.exit_code != 0 and "not valid JSON" in r.output
    # the server's own 422 comes back as one line naming the field too
    with ApiClient(live_service.url, live_service.admin_key) as client, pytest.raises(ClientError) as exc:
        client.post("/v1/jobs", bad)
    assert exc.value.status == 422 and "iterations" in exc.value.message
    with live_service.client() as c:
        assert c.get("/v1/jobs").json()["count"] == before


def test_api_errors_are_one_red_line(live_service):  # noqa: ANN001
    r = metarl("jobs", "show", "job-000000000000", svc=live_service)
    assert r.exit_code == 1 and "not found" in r.output
    r = metarl("jobs", "list", svc=live_service, key="mrl_wrong")
    assert r.exit_code == 1 and "invalid or revoked API key" in r.output


def test_keys_create(live_service):  # noqa: ANN001
    r = metarl("keys", "create", "--owner", "carol", svc=live_service)
    assert r.exit_code == 0, r.output
    key = next(w for w in r.output.split() if w.startswith("mrl_"))
    r = metarl("jobs", "list", svc=live_service, key=key)
    assert r.exit_code == 0 and "jobs (0 of 0)" in r.output  # carol sees none of admin's jobs


# ---- up / down on their own data dir, ports and Ray temp dir ------------------------------------
@pytest.mark.slow
def test_up_down_leave_the_session_ray_alone(ray_session, tmp_path):  # noqa: ANN001
    """`up` starts its own Ray head and API; `down` stops exactly those (never `ray stop`)."""
    home = tmp_path / "home"
    port, dash = free_port(), free_port()
    head: dict = {}
    args = ["up", "--num-cpus", "1", "--port", str(port), "--dashboard-port", str(dash), "--ray-port", str(free_port())]
    try:
        r = metarl(*args, home=home)
        assert r.exit_code == 0, r.output
        assert (home / "ray" / "auth_token").stat().st_mode & 0o777 == 0o600
        head = json.loads((home / "ray" / "head.json").read_text())
        assert local.head_processes(Path(head["temp_dir"]), head["gcs_port"])
        url = (home / "api.url").read_text().strip()
        assert url == f"http://127.0.0.1:{port}"
        r = metarl("cluster", home=home)  # URL from api.url, key from <home>/admin.key
        assert r.exit_code == 0 and "head" in r.output, r.output
        r = metarl(*args, home=home)
        assert r.exit_code == 0 and r.output.count("already running") == 2, r.output
    finally:
        r = metarl("down", home=home)
    assert r.exit_code == 0 and "stopped" in r.output, r.output
    assert not local.head_processes(Path(head["temp_dir"]), head["gcs_port"])
    assert not (home / "api.pid").exists()
    r = metarl("down", home=home)
    assert r.exit_code == 0 and "not running" in r.output
    shutil.rmtree(head["temp_dir"], ignore_errors=True)
    # the session's Ray is untouched
    assert ray_session.get(ray_session.remote(num_cpus=0)(lambda: 41 + 1).remote(), timeout=60) == 42
