"""Request dependencies: the hub's parts and parsed query parameters, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from app.hub.service import HubService
from app.informer.selectors import (
    FIELD_SELECTOR_PATTERN,
    LABEL_SELECTOR_PATTERN,
    MAX_SELECTOR_CHARS,
    MAX_TERMS,
    FieldSelector,
    LabelSelector,
    SelectorError,
)
from app.store.kinds import KindRef
from app.store.queries import ResourceQuery
from app.web.auth import ViewerDep


def get_hub(request: Request) -> HubService:
    hub: HubService = request.app.state.hub
    return hub


def get_engine(hub: Annotated[HubService, Depends(get_hub)]) -> AsyncEngine:
    return hub.engine


HubDep = Annotated[HubService, Depends(get_hub)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]


ApiVersionParam = Annotated[
    str | None,
    Query(alias="apiVersion", max_length=316, description="e.g. apps/v1, events.k8s.io/v1, v1"),
]


def kind_ref(text: str, api_version: str | None) -> KindRef:
    """`Kind`, `Kind.group` or `Kind.` (core), consistent with `apiVersion`; else 400."""
    try:
        ref = KindRef.parse(text)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if api_version is not None and not ref.admits(api_version):
        raise HTTPException(400, f"apiVersion {api_version!r} is not in the group of {ref}")
    return ref


def resource_query(
    hub: HubDep,
    principal: ViewerDep,
    kind: Annotated[
        str | None,
        Query(
            max_length=316,
            description="e.g. Pod; Event.events.k8s.io for one API group; Event. for core",
            json_schema_extra={"pattern": r"^(?:[^.].*)?$"},
        ),
    ] = None,
    api_version: ApiVersionParam = None,
    namespace: Annotated[str | None, Query(max_length=63)] = None,
    label_selector: Annotated[
        str | None,
        Query(
            alias="labelSelector",
            max_length=MAX_SELECTOR_CHARS,
            description=f"e.g. app=web,env in (prod); at most {MAX_TERMS} terms (400 otherwise)",
            json_schema_extra={"pattern": LABEL_SELECTOR_PATTERN},
        ),
    ] = None,
    field_selector: Annotated[
        str | None,
        Query(
            alias="fieldSelector",
            max_length=MAX_SELECTOR_CHARS,
            description="metadata.name / metadata.namespace with =, == or != (400 otherwise)",
            json_schema_extra={"pattern": FIELD_SELECTOR_PATTERN},
        ),
    ] = None,
) -> ResourceQuery:
    ref = kind_ref(kind, api_version) if kind else None  # `kind=` (empty): every kind
    try:
        return ResourceQuery(
            kind=ref.kind if ref else None,
            group=ref.group if ref else None,
            api_version=api_version,
            namespace=namespace,
            labels=LabelSelector.parse(label_selector),
            fields=FieldSelector.parse(field_selector),
            scope=principal.scope,
            cluster_labels=hub.feed.labels,
        )
    except SelectorError as exc:
        raise HTTPException(400, f"bad selector: {exc}") from None


QueryDep = Annotated[ResourceQuery, Depends(resource_query)]
