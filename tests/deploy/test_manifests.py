"""The static deployment: docker-compose.yml, the Dockerfile and the Kustomize manifests.

No Docker engine, cluster or network is needed: the files are parsed and checked against
schemas shipped by PyPI packages (the Compose spec vendored by ``check-jsonschema``; the
Kubernetes OpenAPI schemas bundled by ``kubernetes-validate``; KubeRay's RayCluster field names
from its API types, see ``RAYCLUSTER_FIELDS``), against the service's settings model, and against
the security rules of the deployment docs (nothing of Ray, PostgreSQL or MinIO published; token auth on
every Ray process; the head admits only the API and Ray pods).
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
K8S_VERSION = "1.33.0"  # a Kubernetes release KubeRay 1.4/1.5 supports; the schemas are bundled

# Ports that must never reach the host: Ray GCS, dashboard/job server, client server, runtime
# env / dashboard agents, metrics export, object manager / node manager defaults; PostgreSQL;
# MinIO API and console.
RAY_PORTS = {6379, 8265, 10001, 8076, 8077, 52365, 52366, 8080, 8081, 8085}
FORBIDDEN_PORTS = RAY_PORTS | {5432, 9000, 9001}

# KubeRay's RayCluster API (ray.io/v1) field names, from
# https://github.com/ray-project/kuberay/blob/026f143324c0b7c3cce38db3003b5d45e236fc2e/ray-operator/apis/ray/v1/raycluster_types.go
# (RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, ScaleStrategy, AutoscalerOptions json tags;
# the CRD's openAPIV3Schema is generated from these types).  Pod templates are checked against
# the Kubernetes PodTemplateSpec schema instead.
RAYCLUSTER_FIELDS: dict[str, set[str]] = {
    "spec": {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
             "autoscalerOptions", "headServiceAnnotations", "suspend"},
    "headGroupSpec": {"serviceType", "headService", "enableIngress", "rayStartParams", "template"},
    "workerGroupSpec": {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts",
                        "rayStartParams", "template", "scaleStrategy"},
    "autoscalerOptions": {"resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts",
                          "securityContext", "idleTimeoutSeconds", "upscalingMode"},
}
RAYCLUSTER_REQUIRED = {"spec": {"headGroupSpec"}, "headGroupSpec": {"rayStartParams", "template"},
                       "workerGroupSpec": {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"}}
UPSCALING_MODES = {"Default", "Aggressive", "Conservative"}


# ---- loading -------------------------------------------------------------------------------------
def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_schema() -> dict[str, Any]:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(ref.read_text())


def _json_pointer_parts(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def apply_json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The subset of RFC 6902 the overlays use (add / replace / remove), strict about paths."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _json_pointer_parts(op["path"])
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            idx = len(node) if last == "-" else int(last)
            if op["op"] == "add":
                node.insert(idx, op["value"])
            elif op["op"] == "replace":
                assert idx < len(node), op
                node[idx] = op["value"]
            elif op["op"] == "remove":
                del node[idx]
            else:
                raise AssertionError(f"unsupported op {op}")
        else:
            if op["op"] in ("replace", "remove"):
                assert last in node, f"{op['path']} does not exist"
            if op["op"] == "remove":
                del node[last]
            elif op["op"] in ("add", "replace"):
                node[last] = op["value"]
            else:
                raise AssertionError(f"unsupported op {op}")
    return doc


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def render(kdir: Path) -> list[dict[str, Any]]:
    """A small kustomize: resources (files and directories), namespace, labels, JSON 6902 patches
    with a target.  Anything else in a kustomization fails the test (so the loader stays honest)."""
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization", kdir
    unknown = set(k) - {"apiVersion", "kind", "namespace", "labels", "resources", "patches"}
    assert not unknown, f"{kdir}: kustomization fields this loader does not render: {unknown}"
    docs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (kdir / res).resolve()
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in k.get("patches", []):
        target = patch["target"]
        ops = yaml.safe_load((kdir / patch["path"]).read_text())
        assert isinstance(ops, list), "overlays use JSON 6902 patches"
        hits = 0
        for i, d in enumerate(docs):
            if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]:
                docs[i] = apply_json6902(d, ops)
                hits += 1
        assert hits == 1, f"{kdir}: patch target {target} matched {hits} resources"
    for d in docs:
        if "namespace" in k and d["kind"] not in CLUSTER_SCOPED:
            d["metadata"]["namespace"] = k["namespace"]
        for lab in k.get("labels", []):
            d["metadata"].setdefault("labels", {}).update(lab["pairs"])
    return docs


OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
RENDERINGS = {"base": K8S / "base", **{name: K8S / "overlays" / name for name in OVERLAYS}}


@pytest.fixture(scope="module", params=sorted(RENDERINGS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(RENDERINGS[request.param])


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def raycluster(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (rc,) = by_kind(docs, "RayCluster")
    return rc


def ray_pod_templates(rc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    spec = rc["spec"]
    return [("head", spec["headGroupSpec"]["template"])] + [
        (g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
        if d["kind"] == "RayCluster":
            out += [(f"ray/{name}", t["spec"]) for name, t in ray_pod_templates(d)]
    return out


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {}) or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def compose_command(service: dict[str, Any]) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def published(service: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(host_ip, host_port, container_port) for every port mapping of a compose service."""
    out = []
    for p in service.get("ports", []) or []:
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "")), str(p.get("published", "")), int(p["target"])))
            continue
        spec = str(p).split("/")[0]
        # split on ':' outside ${...} interpolations
        parts = re.findall(r"(?:\$\{[^}]*\}|[^:])+", spec)
        target = int(parts[-1].split("-")[0])
        host_port = parts[-2] if len(parts) >= 2 else ""
        host_ip = parts[-3] if len(parts) >= 3 else ""
        out.append((host_ip, host_port, target))
    return out


def resolve_default(value: str) -> str:
    """``${VAR:-default}`` -> default; anything else unchanged."""
    m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", value)
    return m.group(1) if m else value


# ---- docker-compose.yml ----------------------------------------------------------------------------
def test_compose_validates_against_the_compose_spec() -> None:
    schema = compose_schema()
    assert "services" in schema["properties"]
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(load_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_schema_is_not_a_rubber_stamp() -> None:
    bad = load_compose()
    bad["services"]["api"]["depends_on"]["postgres"]["condition"] = "service_up"
    bad["services"]["api"]["portz"] = ["8000:8000"]
    validator = jsonschema.validators.validator_for(compose_schema())(compose_schema())
    assert len(list(validator.iter_errors(bad))) >= 2


def test_compose_has_the_services_of_issue_5() -> None:
    services = load_compose()["services"]
    assert {"postgres", "minio", "bucket-init", "mlflow", "ray-head", "ray-worker", "api"} <= set(services)
    assert "ray start --head" in compose_command(services["ray-head"])
    assert "--block" in compose_command(services["ray-head"])
    assert "--address=ray-head:6379" in compose_command(services["ray-worker"])
    # scalable: no fixed name, no host port
    assert "container_name" not in services["ray-worker"] and not services["ray-worker"].get("ports")
    assert compose_command(services["api"]) == "python -m service"
    mlflow_cmd = compose_command(services["mlflow"])
    assert "mlflow server" in mlflow_cmd and "--serve-artifacts" in mlflow_cmd
    assert "postgresql" in compose_env(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"]
    assert compose_env(services["mlflow"])["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_compose_health_checks_and_start_order() -> None:
    services = load_compose()["services"]
    for name, svc in services.items():
        if name == "bucket-init":
            assert svc.get("restart") == "no"
            continue
        assert "healthcheck" in svc and svc["healthcheck"].get("test"), f"{name} has no health check"
    want = {
        "bucket-init": {"minio": "service_healthy"},
        "mlflow": {"postgres": "service_healthy", "bucket-init": "service_completed_successfully"},
        "ray-head": {"mlflow": "service_healthy"},
        "ray-worker": {"ray-head": "service_healthy"},
        "api": {"postgres": "service_healthy", "mlflow": "service_healthy", "ray-head": "service_healthy"},
    }
    for name, deps in want.items():
        got = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert got == deps, name


def test_compose_state_lives_in_named_volumes() -> None:
    c = load_compose()
    volumes = set(c.get("volumes", {}))
    mounts = {name: [str(v).split(":")[0] for v in svc.get("volumes", [])] for name, svc in c["services"].items()}
    assert "postgres-data" in mounts["postgres"] and "minio-data" in mounts["minio"]
    assert "metarl-data" in mounts["api"]
    for name, srcs in mounts.items():
        for src in srcs:
            if not src.startswith("."):  # bind mounts only for read-only config (init scripts)
                assert src in volumes, f"{name}: volume {src} is not declared"
    for v in c["services"]["postgres"]["volumes"]:
        if str(v).startswith("."):
            assert str(v).endswith(":ro")


def _settings_env_names() -> set[str]:
    prefix = Settings.model_config["env_prefix"]
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def test_compose_metarl_variables_are_real_settings() -> None:
    names = _settings_env_names()
    assert "METARL_DATABASE_URL" in names  # the model is read, not a copy of it
    used = {k for svc in load_compose()["services"].values() for k in compose_env(svc) if k.startswith("METARL_")}
    assert used, "the api service sets no METARL_ variables"
    assert used <= names, f"not fields of service.settings.Settings: {sorted(used - names)}"
    api = compose_env(load_compose()["services"]["api"])
    assert api["METARL_HOST"] == "0.0.0.0"
    assert api["METARL_RAY_DASHBOARD"] == "http://ray-head:8265"
    assert api["METARL_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert (api["METARL_DATABASE_URL"].startswith("postgresql+psycopg://")
            and "@postgres:5432/" in api["METARL_DATABASE_URL"])
    # the values parse as the service's settings would (port, URL validator)
    Settings(**{k.removeprefix("METARL_").lower(): v for k, v in api.items()
                if k.startswith("METARL_") and "${" not in v})


def test_k8s_metarl_variables_are_real_settings(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    names = _settings_env_names()
    _, docs = rendered
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}
    used = set()
    for _, spec in pod_specs(docs):
        for c in spec["containers"]:
            used |= {k for k in env_of(c) if k.startswith("METARL_")}
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("configMapKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in cms[ref["name"]], f"{ref} missing"
    assert {"METARL_DATABASE_URL", "METARL_RAY_DASHBOARD", "METARL_MLFLOW_TRACKING_URI", "METARL_HOST"} <= used
    assert used <= names, f"not fields of service.settings.Settings: {sorted(used - names)}"
    assert (cms["metarl-config"]["METARL_RAY_DASHBOARD"]
            == f"http://{raycluster(docs)['metadata']['name']}-head-svc:8265")


# ---- compose security ------------------------------------------------------------------------------
def test_compose_publishes_only_the_api_and_a_loopback_mlflow_ui() -> None:
    services = load_compose()["services"]
    for name, svc in services.items():
        assert svc.get("network_mode") != "host", f"{name} uses the host network"
        assert not svc.get("privileged"), name
        for host_ip, _host_port, target in published(svc):
            assert target not in FORBIDDEN_PORTS, f"{name} publishes port {target}"
            if name == "api":
                assert target == 8000
            elif name == "mlflow":
                assert target == 5000 and resolve_default(host_ip) == "127.0.0.1", \
                    f"the MLflow UI may be published on 127.0.0.1 only, not {host_ip!r}"
            else:
                raise AssertionError(f"{name} publishes port {target}: only the API may")
    assert published(services["api"]), "the API is not published"
    for name in ("ray-head", "ray-worker", "postgres", "minio"):
        assert not services[name].get("ports"), name


def test_compose_ray_token_auth_everywhere() -> None:
    c = load_compose()
    secrets = c.get("secrets", {})
    ray_services = [n for n, s in c["services"].items() if "ray start" in compose_command(s)]
    assert set(ray_services) == {"ray-head", "ray-worker"}
    for name in ray_services + ["api"]:
        svc = c["services"][name]
        env = compose_env(svc)
        assert env.get("RAY_AUTH_MODE") == "token", f"{name}: RAY_AUTH_MODE is not token"
        assert "RAY_AUTH_TOKEN" not in env, f"{name}: the token must come from the secret file"
        token_path = env["RAY_AUTH_TOKEN_PATH"]
        secret = token_path.removeprefix("/run/secrets/")
        assert token_path.startswith("/run/secrets/") and secret in svc.get("secrets", []), name
        assert secret in secrets and set(secrets[secret]) & {"environment", "file"}, secret
    assert (compose_env(c["services"]["api"])["METARL_RAY_TOKEN_FILE"]
            == compose_env(c["services"]["api"])["RAY_AUTH_TOKEN_PATH"])
    assert "ray-head:8265" in compose_env(c["services"]["api"])["METARL_RAY_DASHBOARD"]


SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY", re.IGNORECASE)


def test_no_secret_is_committed() -> None:
    c = load_compose()
    for name, svc in c["services"].items():
        for k, v in compose_env(svc).items():
            if SECRET_KEY.search(k) and not k.endswith("_PATH") and not k.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", v), f"{name}.{k} must come from .env (${{VAR:?}})"
            for secret_ref in re.findall(r"//[^:/]+:([^@]+)@", v):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", secret_ref), f"{name}.{k}: a literal password"
    example = (ROOT / ".env.example").read_text()
    values = dict(line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#"))
    interpolated = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text())) | {"RAY_AUTH_TOKEN"}
    assert required <= set(values), f".env.example lacks {sorted(required - set(values))}"
    assert set(values) <= interpolated | {"RAY_AUTH_TOKEN"}, f"unused in compose: {sorted(set(values) - interpolated)}"
    for k, v in values.items():
        if SECRET_KEY.search(k):
            assert v.startswith("change-me"), f".env.example {k} must be a placeholder"
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in dockerignore and ".git" in dockerignore
    for d in [d for p in K8S.rglob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)]:
        assert d.get("kind") != "Secret", "Secrets are created with kubectl, never committed"


# ---- Dockerfile --------------------------------------------------------------------------------------
def test_dockerfile_multistage_pinned_non_root() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert len(froms) >= 2 and {"build", "runtime"} <= {a for _, a in froms}
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), f"unpinned base {base}"
    assert "--index-url \"https://download.pytorch.org/whl/${TORCH_VARIANT}\"" in text
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.MULTILINE)
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", text, re.MULTILINE)
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()
    assert re.search(r'pip install "\.\[rllib\]"', text), "the package is installed with its extras"
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    for lib in ("libosmesa6", "libegl1", "libgl1"):
        assert lib in text, f"MuJoCo headless needs {lib}"
    # the venv path is the same in every container: the API submits `<sys.executable> -m workers.driver`
    assert "/opt/metarl/venv" in text


# ---- Kubernetes ----------------------------------------------------------------------------------------
def test_every_k8s_manifest_validates(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "RayCluster", "Deployment", "Service", "StatefulSet", "NetworkPolicy"} <= kinds, name
    for d in docs:
        if d["kind"] == "RayCluster":
            for group, template in ray_pod_templates(d):
                wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                           "metadata": {"name": f"{d['metadata']['name']}-{group}"}, "template": template}
                kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)
            stub = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "autoscaler"},
                    "spec": {"containers": [{"name": "autoscaler", "image": "x",
                                             "env": d["spec"]["autoscalerOptions"].get("env", []),
                                             "resources": d["spec"]["autoscalerOptions"].get("resources", {})}]}}
            kubernetes_validate.validate(stub, K8S_VERSION, strict=True)
            continue
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_k8s_validator_is_not_a_rubber_stamp() -> None:
    (dep,) = [d for d in by_kind(render(K8S / "base"), "Deployment") if d["metadata"]["name"] == "metarl-api"]
    dep["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(raycluster(render(K8S / "base")), K8S_VERSION, strict=True)


def test_raycluster_uses_only_kuberay_fields(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    rc = raycluster(docs)
    assert rc["apiVersion"] == "ray.io/v1"
    assert set(rc) <= {"apiVersion", "kind", "metadata", "spec"}

    def check(obj: dict[str, Any], what: str) -> None:
        assert set(obj) <= RAYCLUSTER_FIELDS[what], f"{what}: not KubeRay fields: {set(obj) - RAYCLUSTER_FIELDS[what]}"
        assert RAYCLUSTER_REQUIRED.get(what, set()) <= set(obj), (
            f"{what}: missing {RAYCLUSTER_REQUIRED[what] - set(obj)}"
        )

    spec = rc["spec"]
    check(spec, "spec")
    check(spec["headGroupSpec"], "headGroupSpec")
    check(spec["autoscalerOptions"], "autoscalerOptions")
    assert spec["autoscalerOptions"].get("upscalingMode", "Default") in UPSCALING_MODES
    groups = spec["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups)
    for g in groups:
        check(g, "workerGroupSpec")
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g["groupName"]
    for params in [spec["headGroupSpec"]["rayStartParams"]] + [g["rayStartParams"] for g in groups]:
        assert all(isinstance(v, str) for v in params.values()), "rayStartParams is map[string]string"
    assert spec["rayVersion"] == "2.60.0"


def test_raycluster_node_groups(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    spec = raycluster(docs)["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    cpu, gpu = groups["cpu-rollout"], groups["gpu-learner"]
    assert cpu["maxReplicas"] > cpu["minReplicas"] >= 1, "the rollout group autoscales"
    cpu_res = cpu["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in cpu_res.get("limits", {})
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1, "the GPU group scales from zero"
    gpu_res = gpu["template"]["spec"]["containers"][0]["resources"]
    assert gpu_res["limits"]["nvidia.com/gpu"] == 1 and gpu_res["requests"]["nvidia.com/gpu"] == 1
    assert gpu["rayStartParams"].get("num-cpus") == "0", "rollout actors stay off the GPU nodes"
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"


def test_overlays_differ_in_size() -> None:
    assert {"small", "large"} <= set(OVERLAYS)

    def cpu_max(name: str) -> int:
        groups = raycluster(render(K8S / "overlays" / name))["spec"]["workerGroupSpecs"]
        return next(g["maxReplicas"] for g in groups if g["groupName"] == "cpu-rollout")

    assert cpu_max("small") < cpu_max("large")


def test_learner_requests_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec with learner_gpus > 0 makes the learner actor request num_gpus, with no node
    affinity, so Ray (and the autoscaler) place it on the GPU group, the only one offering GPU."""
    import ray

    from workers import learner

    captured: dict[str, Any] = {}

    class Stub:
        def options(self, **kw: Any) -> dict[str, Any]:
            captured.update(kw)
            return kw

    monkeypatch.setattr(ray, "remote", lambda cls: Stub())
    learner.remote_learner(gpus=1, node_id="ab" * 28)
    assert captured["num_gpus"] == 1 and "scheduling_strategy" not in captured
    captured.clear()
    learner.remote_learner(gpus=0, node_id="ab" * 28)
    assert captured["num_gpus"] == 0 and "scheduling_strategy" in captured


# ---- Kubernetes security -------------------------------------------------------------------------------
def test_k8s_ray_token_auth_on_every_ray_pod(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    rc = raycluster(docs)
    envs = [(f"{group}/{c['name']}", env_of(c)) for group, t in ray_pod_templates(rc) for c in t["spec"]["containers"]]
    envs.append(("autoscaler", {e["name"]: e for e in rc["spec"]["autoscalerOptions"]["env"]}))
    (api,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "metarl-api"]
    envs += [(f"api/{c['name']}", env_of(c)) for c in api["spec"]["template"]["spec"]["containers"]]
    for where, env in envs:
        assert env["RAY_AUTH_MODE"].get("value") == "token", where
        token = env["RAY_AUTH_TOKEN"]
        assert "value" not in token, f"{where}: a literal token"
        assert token["valueFrom"]["secretKeyRef"]["name"] == "metarl-secrets", where
        assert not token["valueFrom"]["secretKeyRef"].get("optional"), where


def test_k8s_nothing_but_the_api_leaves_the_cluster_network(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for svc in by_kind(docs, "Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", f"Service {svc['metadata']['name']}"
        assert not svc["spec"].get("externalIPs"), svc["metadata"]["name"]
    head = raycluster(docs)["spec"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress")
    assert not by_kind(docs, "Ingress"), "expose the API with your own Ingress, not Ray/MLflow"
    for _, spec in pod_specs(docs):
        assert not spec.get("hostNetwork")
        for c in spec["containers"]:
            assert not any("hostPort" in p for p in c.get("ports", [])), c["name"]


def _admitted(policy: dict[str, Any]) -> list[dict[str, Any]]:
    peers = []
    for rule in policy["spec"].get("ingress", []):
        assert rule.get("from"), f"{policy['metadata']['name']}: a rule without `from` admits everyone"
        peers += rule["from"]
    return peers


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    sel = policy["spec"]["podSelector"]
    assert not sel.get("matchExpressions")
    return all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items())


def test_k8s_network_policies(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    policies = by_kind(docs, "NetworkPolicy")
    rc = raycluster(docs)
    cluster = rc["metadata"]["name"]
    api_labels = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "metarl-api")[
        "spec"]["template"]["metadata"]["labels"]
    # labels KubeRay puts on its pods (plus the template's own)
    head_labels = {"ray.io/cluster": cluster, "ray.io/node-type": "head",
                   **rc["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]}
    pods = {
        "ray-head": head_labels,
        "ray-worker": {"ray.io/cluster": cluster, "ray.io/node-type": "worker"},
        "mlflow": {"app.kubernetes.io/name": "mlflow"},
        "postgres": {"app.kubernetes.io/name": "postgres"},
    }
    allowed_sources = {
        "ray-head": [{"ray.io/cluster": cluster}, api_labels],
        "ray-worker": [{"ray.io/cluster": cluster}],
        "mlflow": [{"ray.io/cluster": cluster}, api_labels],
        "postgres": [api_labels, {"app.kubernetes.io/name": "mlflow"}],
    }
    deny_all = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
                and "Ingress" in p["spec"]["policyTypes"]]
    assert deny_all, "no default-deny ingress policy"
    for target, labels in pods.items():
        selecting = [p for p in policies if _selects(p, labels) and p["spec"].get("ingress")]
        assert selecting, f"no NetworkPolicy selects the {target} pods"
        for p in selecting:
            for peer in _admitted(p):
                assert set(peer) == {"podSelector"}, f"{p['metadata']['name']}: {peer} admits outside the namespace"
                match = peer["podSelector"].get("matchLabels", {})
                assert match and not peer["podSelector"].get("matchExpressions")
                # the peer's selector must only match pods of an allowed kind
                assert any(match.items() <= src.items() for src in allowed_sources[target]), \
                    f"{p['metadata']['name']} admits {match} to {target}"
    (head_policy,) = [p for p in policies if p["metadata"]["name"] == "ray-head"]
    admitted = [peer["podSelector"]["matchLabels"] for peer in _admitted(head_policy)]
    assert {"app.kubernetes.io/name": "metarl-api"} in admitted and {"ray.io/cluster": cluster} in admitted
