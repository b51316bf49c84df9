"""``/v1/models``: the registry (models, versions, aliases, downloads) and meta-test evaluations."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from service import adapt, evaluations, registry
from service.deps import AdaptServersDep, LauncherDep, PrincipalDep, StoreDep, ViewDep
from service.schemas import (
    AdaptRequest,
    AdaptResponse,
    AliasUpdate,
    EvaluationCreate,
    EvaluationPublic,
    EvaluationsPublic,
    ModelPublic,
    ModelsPublic,
    ModelVersionPublic,
    ModelVersionsPublic,
)
from workers.contract import NAME_PATTERN

router = APIRouter(prefix="/v1", tags=["models"])

Name = Annotated[str, Path(pattern=NAME_PATTERN, description="registered model name")]
Version = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,8}$", description="version number")]
#: checked by registry.check_alias (a 422 naming ``alias``), not here: the rules include reserved names
Alias = Annotated[str, Path(description="1-255 letters, digits, '_' and '-'; not 'latest' or 'v<N>'")]


@router.get("/models", response_model=ModelsPublic)
async def list_models(view: ViewDep, principal: PrincipalDep) -> ModelsPublic:
    """Registered models the caller owns a version of (an admin: all)."""
    data = await asyncio.to_thread(registry.list_models, view=view, principal=principal)
    return ModelsPublic(data=data, count=len(data))


@router.get("/models/{name}", response_model=ModelPublic)
async def show_model(name: Name, view: ViewDep, principal: PrincipalDep) -> ModelPublic:
    return await asyncio.to_thread(registry.get_model, view=view, principal=principal, name=name)


@router.get("/models/{name}/versions", response_model=ModelVersionsPublic)
async def list_versions(name: Name, view: ViewDep, principal: PrincipalDep) -> ModelVersionsPublic:
    """The caller's versions, newest first, with aliases, tags and the training run's final metrics."""
    data = await asyncio.to_thread(registry.list_versions, view=view, principal=principal, name=name)
    return ModelVersionsPublic(data=data, count=len(data))


@router.get("/models/{name}/versions/{version}", response_model=ModelVersionPublic)
async def show_version(name: Name, version: Version, view: ViewDep, principal: PrincipalDep) -> ModelVersionPublic:
    return await asyncio.to_thread(registry.get_version, view=view, principal=principal, name=name, version=version)


@router.put("/models/{name}/aliases/{alias}", response_model=ModelVersionPublic)
async def set_alias(name: Name, alias: Alias, body: AliasUpdate, view: ViewDep,
                    principal: PrincipalDep) -> ModelVersionPublic:
    """Point ``alias`` at ``body.version`` (moving it if it pointed elsewhere); returns that version."""
    return await asyncio.to_thread(registry.set_alias, view=view, principal=principal, name=name, alias=alias,
                                   version=body.version)


@router.get("/models/{name}/versions/{version}/download", response_class=FileResponse,
            responses={200: {"content": {"application/gzip": {}},
                             "description": "the MLflow model directory as <name>-v<version>/ in a .tar.gz"}})
async def download(name: Name, version: Version, view: ViewDep, principal: PrincipalDep) -> FileResponse:
    """The version's model files as one ``.tar.gz`` (``MetaPolicy.from_directory`` loads the
    extracted ``<name>-v<version>`` directory)."""
    archive = await asyncio.to_thread(registry.build_archive, view=view, principal=principal, name=name,
                                      version=version)
    return FileResponse(archive.path, media_type="application/gzip", filename=archive.filename,
                        background=BackgroundTask(archive.cleanup))


# ---- adapt -------------------------------------------------------------------------------------
@router.post("/models/{name}/adapt", response_model=AdaptResponse)
async def adapt_model(name: Name, body: AdaptRequest, view: ViewDep, servers: AdaptServersDep,
                      principal: PrincipalDep) -> AdaptResponse:
    """Adapt a supervised model (``version``, ``alias``, else the caller's newest) on a support set
    and predict a query set, on one of this process's model servers (not a job: answered in the
    request).  422 names the field that does not fit the model; 503 when every server stays busy."""
    return await asyncio.to_thread(adapt.adapt, view=view, servers=servers, principal=principal, name=name,
                                   request=body)


# ---- evaluations -------------------------------------------------------------------------------
@router.post("/models/{name}/versions/{version}/evaluations", status_code=201, response_model=EvaluationPublic)
async def create_evaluation(name: Name, version: Version, body: EvaluationCreate, response: Response,
                            store: StoreDep, launcher: LauncherDep, view: ViewDep,
                            principal: PrincipalDep) -> EvaluationPublic:
    """Meta-test the version on held-out tasks (a Ray job); poll ``GET /v1/evaluations/{id}``."""
    row = await asyncio.to_thread(evaluations.create_evaluation, store=store, launcher=launcher, view=view,
                                  principal=principal, name=name, version=version, request=body)
    response.headers["Location"] = f"/v1/evaluations/{row.id}"
    return evaluations.to_public(row)


@router.get("/models/{name}/versions/{version}/evaluations", response_model=EvaluationsPublic)
async def list_evaluations(name: Name, version: Version, store: StoreDep, launcher: LauncherDep, view: ViewDep,
                           principal: PrincipalDep) -> EvaluationsPublic:
    rows = await asyncio.to_thread(evaluations.list_evaluations, store=store, launcher=launcher, view=view,
                                   principal=principal, name=name, version=version)
    return EvaluationsPublic(data=[evaluations.to_public(r) for r in rows], count=len(rows))


@router.get("/evaluations/{eval_id}", response_model=EvaluationPublic)
async def show_evaluation(eval_id: str, store: StoreDep, launcher: LauncherDep, view: ViewDep,
                          principal: PrincipalDep) -> EvaluationPublic:
    """Status (refreshed from Ray) and, once SUCCEEDED, pre/post return and success and the report."""
    row = await asyncio.to_thread(evaluations.get_evaluation, store=store, launcher=launcher, view=view,
                                  principal=principal, eval_id=eval_id)
    return evaluations.to_public(row)
