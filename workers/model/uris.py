"""Model URIs: which registered version a ``models:/`` URI names, resolved against the tracking
store the service and the driver use (:func:`workers.tracking.tracking_uri`)."""

from __future__ import annotations

import os
import re
from typing import Any

from workers import tracking

# MLflow starts its telemetry client when it is imported: switch it off first (it reaches out by default).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))$")


class ModelNotFoundError(LookupError):
    """The model URI names nothing in the tracking store (or no directory on disk)."""


def is_remote(uri: str) -> bool:
    """``uri`` has a scheme (``models:/``, ``runs:/``, ``s3://`` ...), i.e. it is not a local path."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", uri))


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """``models:/NAME/VERSION`` → ``(NAME, VERSION, None)``, ``models:/NAME@ALIAS`` →
    ``(NAME, None, ALIAS)``; None for any other URI (``runs:/``, ``models:/m-...``, paths)."""
    m = _REGISTRY_URI.match(uri)
    if m is None:
        return None
    return m["name"], m["version"], m["alias"]


def resolve_model_version(uri: str) -> tuple[str, int] | None:
    """The registered ``(name, version)`` a ``models:/NAME/...`` URI points at now (aliases and
    ``latest`` resolved), or None for a URI that is not a registry URI.

    Raises:
        ModelNotFoundError: the name, version or alias does not exist; the message lists the
            registered models of the store.
    """
    parsed = parse_registry_uri(uri)
    if parsed is None:
        return None
    name, version, alias = parsed
    store = tracking.tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    try:
        if version is not None and version.isdigit():
            mv = client.get_model_version(name, version)
        elif alias is not None:
            try:
                mv = client.get_model_version_by_alias(name, alias)
            except MlflowException:
                if alias != "latest":
                    raise
                mv = _latest_version(client, name, store)  # MLflow reads "@latest" the same way
        elif version == "latest":
            mv = _latest_version(client, name, store)
        else:
            # a stage name ("Production"): leave it to MLflow's own resolution
            return None
    except MlflowException as exc:
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise ModelNotFoundError(
            f"cannot resolve {uri!r} in tracking store {store}: {exc.message.rstrip('.')}. "
            f"Registered models there: {names or 'none'} (set MLFLOW_TRACKING_URI to use another store)"
        ) from exc
    return name, int(mv.version)


def _latest_version(client: Any, name: str, store: str) -> Any:
    client.get_registered_model(name)  # raises RESOURCE_DOES_NOT_EXIST for an unknown name
    found = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"], max_results=1)
    if not found:
        raise ModelNotFoundError(f"registered model {name!r} has no versions in tracking store {store}")
    return found[0]


def resolve_model_uri(uri: str) -> str:
    """``uri`` with a registry alias or ``latest`` replaced by the version it points at, so what
    is loaded and what is reported are the same version."""
    resolved = resolve_model_version(uri)
    return uri if resolved is None else f"models:/{resolved[0]}/{resolved[1]}"


def download(uri: str, dst: str) -> str:
    """Download the model files ``uri`` names into ``dst``; returns the local directory.

    Raises:
        ModelNotFoundError: nothing at ``uri``; the message names the store searched.
    """
    canonical = resolve_model_uri(uri)
    store = tracking.tracking_uri()
    try:
        source = canonical
        parsed = parse_registry_uri(canonical)
        if parsed is not None and parsed[1] is not None and parsed[1].isdigit():
            # MLflow looks models:/NAME/V up in its default registry (./mlflow.db unless
            # MLFLOW_TRACKING_URI is set), not in `store`: resolve the files' location here
            registry = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
            source = registry.get_model_version_download_uri(parsed[0], parsed[1])
        return mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=dst, tracking_uri=store)
    except MlflowException as exc:
        raise ModelNotFoundError(f"cannot load {uri!r} from tracking store {store}: {exc.message.rstrip('.')}") from exc
