"""Request dependencies: the hub's parts and parsed query parameters, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from app.hub.service import HubService
from app.informer.selectors import FieldSelector, LabelSelector, SelectorError
from app.store.queries import ResourceQuery


def get_hub(request: Request) -> HubService:
    hub: HubService = request.app.state.hub
    return hub


def get_engine(hub: Annotated[HubService, Depends(get_hub)]) -> AsyncEngine:
    return hub.engine


HubDep = Annotated[HubService, Depends(get_hub)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]


def resource_query(
    kind: Annotated[str | None, Query(description="e.g. Pod")] = None,
    api_version: Annotated[
        str | None, Query(alias="apiVersion", description="e.g. apps/v1")
    ] = None,
    namespace: str | None = None,
    label_selector: Annotated[
        str | None, Query(alias="labelSelector", description="e.g. app=web,env in (prod)")
    ] = None,
    field_selector: Annotated[
        str | None, Query(alias="fieldSelector", description="metadata.name / metadata.namespace")
    ] = None,
) -> ResourceQuery:
    try:
        return ResourceQuery(
            kind=kind,
            api_version=api_version,
            namespace=namespace,
            labels=LabelSelector.parse(label_selector),
            fields=FieldSelector.parse(field_selector),
        )
    except SelectorError as exc:
        raise HTTPException(400, f"bad selector: {exc}") from None


QueryDep = Annotated[ResourceQuery, Depends(resource_query)]
