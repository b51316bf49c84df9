"""The model registry as the API shows it: registered models, their versions (aliases, tags, the
training run's final metrics), aliases, and a version's files as one archive.

Ownership: the engine tags every registered version with ``owner`` (and ``job_id``).  A caller
sees a model only if it owns at least one of its versions, and sees only those versions; an admin
sees everything.  What the caller may not see is a 404, exactly like what does not exist.
A model name belongs to the owner whose job first registered into it: ``jobs.submit_job`` refuses
(409) anyone else's ``register_as`` of it, an admin's too, since an admin's version would be one
the name's owner cannot see (an admin reads and manages every model but adds no versions to
another owner's).
Keyword-only functions over the service's ``MlflowClient`` (``TrackingView.client``)."""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from algorithms import registry as algorithms
from service import declared
from service.auth import Principal
from service.errors import ApiError, not_found, unavailable
from service.schemas import ModelPublic, ModelVersionPublic
from service.tracking_view import TrackingView
from workers.contract import NAME_PATTERN

log = logging.getLogger("metarl.service.registry")

#: the version tag the engine writes (workers.driver: ``extra_tags={"owner": ..., "job_id": ...}``)
OWNER_TAG = "owner"
#: the version tag naming the algorithm that trained it (workers.model.register)
ALGORITHM_TAG = "algorithm"
ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
#: MLflow keeps these for itself: ``@latest`` and ``@v<N>`` already mean a version
RESERVED_ALIAS = re.compile(r"^(latest|[vV][0-9]+)$", re.IGNORECASE)
_NAME = re.compile(NAME_PATTERN)
_PAGE = 1000


def _ms(ts: int | None) -> dt.datetime | None:
    return None if not ts else dt.datetime.fromtimestamp(ts / 1000, dt.UTC).replace(tzinfo=None)


def _code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


@contextmanager
def _mlflow(what: str, ident: str) -> Iterator[None]:
    """MLflow's "does not exist" becomes a 404; a store that cannot be reached a 503."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if _code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise not_found(what, ident) from exc
        if _code(exc) in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
            raise
        raise unavailable(f"the model registry is not available: {exc.message}") from exc
    except (ConnectionError, OSError) as exc:
        raise unavailable(f"the model registry is not available: {exc}") from exc


def _visible(principal: Principal, mv: Any) -> bool:
    return principal.is_admin or mv.tags.get(OWNER_TAG) == principal.owner


def algorithm_kind(mv: Any) -> str | None:
    """``rl`` or ``supervised``: the kind of the algorithm that trained version ``mv`` (its
    ``algorithm`` tag); None for an algorithm this process does not know."""
    name = (mv.tags or {}).get(ALGORITHM_TAG)
    try:
        return algorithms.get(name).kind if isinstance(name, str) else None
    except LookupError:
        return None


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise not_found("model", name)


def _search_versions(view: TrackingView, filter_string: str | None) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        page = view.client.search_model_versions(filter_string, max_results=_PAGE, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _versions_of(view: TrackingView, *, principal: Principal, name: str) -> list[Any]:
    """The caller's versions of ``name``, newest first; 404 when there are none to see."""
    _check_name(name)
    with _mlflow("model", name):
        found = _search_versions(view, f"name = '{name}'")
    mine = sorted((mv for mv in found if _visible(principal, mv)), key=lambda mv: int(mv.version), reverse=True)
    if not mine:
        with _mlflow("model", name):
            view.client.get_registered_model(name)  # 404 when the name does not exist at all
        if not principal.is_admin:
            raise not_found("model", name)
    return mine


def run_metrics(*, view: TrackingView, run_id: str | None) -> dict[str, float]:
    """The training run's final metric values (empty when the run is gone)."""
    if not run_id:
        return {}
    try:
        return dict(view.client.get_run(run_id).data.metrics)
    except Exception as exc:  # noqa: BLE001 - a deleted run leaves the version readable, without metrics
        log.warning("metrics of run %s: %s", run_id, exc)
        return {}


def version_public(mv: Any, *, metrics: dict[str, float] | None = None,
                   aliases: list[str] | None = None) -> ModelVersionPublic:
    tags = dict(mv.tags or {})
    return ModelVersionPublic.model_validate({
        "name": mv.name, "version": str(mv.version), "uri": f"models:/{mv.name}/{mv.version}",
        "aliases": sorted(aliases if aliases is not None else (mv.aliases or [])), "tags": tags,
        "metrics": metrics or {}, "metrics_declared": declared.for_algorithm(tags.get(ALGORITHM_TAG)),
        "run_id": mv.run_id or None, "status": str(mv.status) if mv.status is not None else None,
        "created_at": _ms(mv.creation_timestamp),
    })


def _model_public(rm: Any, versions: list[Any]) -> ModelPublic:
    seen = {str(mv.version) for mv in versions}
    aliases = {a: str(v) for a, v in (rm.aliases or {}).items() if str(v) in seen}
    latest = max((int(mv.version) for mv in versions), default=None)
    return ModelPublic(name=rm.name, aliases=dict(sorted(aliases.items())),
                       latest_version=None if latest is None else str(latest), versions=len(versions),
                       description=rm.description or None, updated_at=_ms(rm.last_updated_timestamp))


# ---- reads -----------------------------------------------------------------------------------
def list_models(*, view: TrackingView, principal: Principal) -> list[ModelPublic]:
    """The registered models the caller owns a version of (an admin: all), by name."""
    with _mlflow("models", "*"):
        if principal.is_admin:
            by_name: dict[str, list[Any]] = {}
            for mv in _search_versions(view, None):
                by_name.setdefault(mv.name, []).append(mv)
            token: str | None = None
            models: list[Any] = []
            while True:
                page = view.client.search_registered_models(max_results=_PAGE, page_token=token)
                models.extend(page)
                token = page.token
                if not token:
                    break
            return sorted((_model_public(rm, by_name.get(rm.name, [])) for rm in models), key=lambda m: m.name)
        by_name = {}
        for mv in _search_versions(view, f"tags.`{OWNER_TAG}` = '{principal.owner}'"):
            by_name.setdefault(mv.name, []).append(mv)
        out = []
        for name, versions in sorted(by_name.items()):
            try:
                out.append(_model_public(view.client.get_registered_model(name), versions))
            except Exception as exc:  # noqa: BLE001 - deleted between the two reads: leave it out
                log.warning("registered model %s: %s", name, exc)
        return out


def get_model(*, view: TrackingView, principal: Principal, name: str) -> ModelPublic:
    versions = _versions_of(view, principal=principal, name=name)
    with _mlflow("model", name):
        return _model_public(view.client.get_registered_model(name), versions)


def list_versions(*, view: TrackingView, principal: Principal, name: str) -> list[ModelVersionPublic]:
    """The caller's versions of ``name``, newest first, each with its aliases and its training
    run's metrics (MLflow's version search leaves aliases out: they come from the model)."""
    versions = _versions_of(view, principal=principal, name=name)
    with _mlflow("model", name):
        by_version: dict[str, list[str]] = {}
        for alias, v in (view.client.get_registered_model(name).aliases or {}).items():
            by_version.setdefault(str(v), []).append(alias)
    return [version_public(mv, metrics=run_metrics(view=view, run_id=mv.run_id),
                           aliases=by_version.get(str(mv.version), []))
            for mv in versions]


def get_version_entity(*, view: TrackingView, principal: Principal, name: str, version: str) -> Any:
    """MLflow's ``ModelVersion``, if the caller may see it; else 404."""
    _check_name(name)
    ident = f"{name}/{version}"
    with _mlflow("model version", ident):
        mv = view.client.get_model_version(name, version)
    if not _visible(principal, mv):
        raise not_found("model version", ident)
    return mv


def resolve_version_entity(*, view: TrackingView, principal: Principal, name: str, version: str | None = None,
                           alias: str | None = None) -> Any:
    """The version a request names: ``version``, else the one ``alias`` points at, else the
    caller's newest; 404 for what the caller may not see, as for what does not exist."""
    if version is not None:
        return get_version_entity(view=view, principal=principal, name=name, version=version)
    if alias is not None:
        _check_name(name)
        ident = f"{name}@{alias}"
        from mlflow.exceptions import MlflowException

        try:
            with _mlflow("model alias", ident):
                mv = view.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:  # an alias that is not set: MLflow's INVALID_PARAMETER_VALUE
            raise not_found("model alias", ident) from exc
        if not _visible(principal, mv):
            raise not_found("model alias", ident)
        return mv
    versions = _versions_of(view, principal=principal, name=name)
    if not versions:  # an admin, a model without versions
        raise not_found("model version", f"{name}/latest")
    return versions[0]


def get_version(*, view: TrackingView, principal: Principal, name: str, version: str) -> ModelVersionPublic:
    mv = get_version_entity(view=view, principal=principal, name=name, version=version)
    return version_public(mv, metrics=run_metrics(view=view, run_id=mv.run_id))


# ---- aliases ---------------------------------------------------------------------------------
def check_alias(alias: str) -> None:
    """422 naming the field for an alias MLflow would refuse or read as something else."""
    problem = None
    if not ALIAS_PATTERN.match(alias):
        problem = "an alias is 1 to 255 letters, digits, '_' or '-'"
    elif RESERVED_ALIAS.match(alias):
        problem = "'latest' and 'v<number>' are reserved (they already name versions)"
    if problem:
        raise ApiError(422, "invalid_request", "invalid request: alias",
                       [{"field": "alias", "message": f"{alias!r}: {problem}", "type": "value_error"}])


def set_alias(*, view: TrackingView, principal: Principal, name: str, alias: str, version: str) -> ModelVersionPublic:
    """Point ``alias`` of ``name`` at ``version`` (which the caller must be able to see)."""
    check_alias(alias)
    get_version_entity(view=view, principal=principal, name=name, version=version)
    with _mlflow("model version", f"{name}/{version}"):
        view.client.set_registered_model_alias(name, alias, version)
    log.info("alias %s@%s -> version %s (by %s)", name, alias, version, principal.owner)
    return get_version(view=view, principal=principal, name=name, version=version)


# ---- download --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Archive:
    """A ``.tar.gz`` of one model version in a temp dir; ``cleanup()`` removes it."""

    path: Path
    filename: str
    cleanup: Callable[[], None]


def build_archive(*, view: TrackingView, principal: Principal, name: str, version: str) -> Archive:
    """Download the version's model files (the MLflow model: ``MLmodel``, ``artifacts/params.pt``,
    ``artifacts/policy.json``, ...) and pack them as ``<name>-v<version>/...`` in a ``.tar.gz``.
    ``workers.model.MetaPolicy.from_directory`` loads the extracted ``<name>-v<version>``."""
    import mlflow.artifacts

    mv = get_version_entity(view=view, principal=principal, name=name, version=version)
    top = f"{mv.name}-v{mv.version}"
    tmp = Path(tempfile.mkdtemp(prefix="metarl-download-"))
    try:
        uri = view.tracking_uri
        with _mlflow("model files of", f"{name}/{version}"):
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(tmp / "files"), tracking_uri=uri,
                registry_uri=uri))
        path = tmp / f"{top}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(local, arcname=top)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp / "files", ignore_errors=True)
    return Archive(path=path, filename=path.name, cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True))
