"""Workload forms: create and edit from YAML with a live placement preview, and delete.
Same store and validation as the JSON API (`app.web.workloads`). The pages that show
workloads are in `rollout_pages`."""

from __future__ import annotations

import time
from typing import Any

import orjson
import yaml
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.access.roles import Principal, Role
from app.placement.spec import Placement, WorkloadSpec, parse_manifests
from app.store import workloads as store
from app.store.fleet import first_clusters
from app.store.workloads import WorkloadExists, WorkloadNotFound
from app.web.auth import OperatorDep, ViewerDep, audit_record, needs
from app.web.deps import HubDep
from app.web.pages import render_page, templates_of
from app.web.resilience import RetryingRoute
from app.web.workloads import admit, preview, values_of, visible_scope

router = APIRouter(
    include_in_schema=False, route_class=RetryingRoute, dependencies=[needs(Role.VIEWER)]
)
CHECKLIST_MAX_CLUSTERS = 50
"""Up to this many, the form lists the clusters to tick; beyond, names are typed."""


# -- the form ---------------------------------------------------------------------------

EXAMPLE = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  template:
    spec:
      containers:
      - name: web
        image: nginx:1.27
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
data:
  greeting: hello
"""


def _form_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p != "body")
        out.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return out


def _integer(text: str | None) -> int | None:
    """A form's number field: None when empty; ValueError unless a short decimal."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise ValueError(f"{text[:20]!r} is not a number from 1 to 999999999")
    return int(text)


def _spec_from_form(form: dict[str, Any]) -> WorkloadSpec:
    """Raises ValueError (bad YAML) or ValidationError (anything else)."""
    manifests = parse_manifests(form["manifests"])
    max_clusters = _integer(form.get("maxClusters"))
    return WorkloadSpec.model_validate(
        {
            "name": form["name"],
            "manifests": manifests,
            "placement": {
                "labelSelector": form.get("labelSelector", ""),
                "clusters": form.get("clusters", []),
                "maxClusters": max_clusters,
            },
            "updateStrategy": form.get("updateStrategy") or "ServerSideApply",
            "deleteOption": form.get("deleteOption") or "Foreground",
            "feedbackRules": orjson.loads(form.get("feedbackRules") or "[]"),
        }
    )


async def _form_page(
    request: Request,
    hub: HubDep,
    principal: Principal,
    form: dict[str, Any],
    *,
    editing: bool,
    errors: list[str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    clusters = await first_clusters(hub.engine, CHECKLIST_MAX_CLUSTERS + 1, scope=principal.scope)
    many = len(clusters) > CHECKLIST_MAX_CLUSTERS
    response = await render_page(
        request,
        hub,
        "workload_form.html",
        form=form,
        editing=editing,
        errors=errors or [],
        clusters=[] if many else clusters,
    )
    response.status_code = status
    return response


@router.get("/ui/workloads/new", response_class=HTMLResponse)
async def new_form(request: Request, hub: HubDep, principal: OperatorDep) -> HTMLResponse:
    form = {
        "name": "",
        "manifests": EXAMPLE,
        "labelSelector": "env=prod",
        "clusters": [],
        "maxClusters": "",
        "updateStrategy": "ServerSideApply",
        "deleteOption": "Foreground",
        "feedbackRules": "",
    }
    return await _form_page(request, hub, principal, form, editing=False)


async def _submitted(request: Request) -> dict[str, Any]:
    """The form's fields; clusters named by checkbox (small fleets) or typed in
    `clusterNames` (separated by commas or white space) together."""
    data = await request.form()
    form: dict[str, Any] = {k: str(v) for k, v in data.items() if k != "clusters"}
    typed = str(data.get("clusterNames") or "").replace(",", " ").split()
    form["clusters"] = list(dict.fromkeys([str(c) for c in data.getlist("clusters")] + typed))
    form.setdefault("manifests", "")
    form.setdefault("name", "")
    return form


async def _save(
    request: Request, hub: HubDep, principal: Principal, *, editing: str | None = None
) -> Response:
    """Create (editing None) or update the workload named `editing` from the form."""
    form = await _submitted(request)
    action = "workload.update" if editing is not None else "workload.create"
    try:
        spec = _spec_from_form(form)
        if editing is not None and spec.name != editing:
            raise ValueError(f"the form names workload {spec.name!r}, this page {editing!r}")
        await admit(request, principal, spec, action)
        now = time.time()
        values = values_of(spec, principal.scope)
        audit = audit_record(request, principal, action, spec.name)
        if editing is not None:
            await store.update_workload(
                hub.engine,
                values,
                now,
                hub.writer.lock,
                scope=visible_scope(principal),
                audit=audit,
            )
        else:
            await store.create_workload(hub.engine, values, now, hub.writer.lock, audit=audit)
    except ValidationError as exc:
        errors, status = _form_errors(exc), 422
    except HTTPException as exc:  # refused by the admission policy
        errors, status = [str(exc.detail)], exc.status_code
    except (ValueError, WorkloadExists, WorkloadNotFound) as exc:
        errors, status = [str(exc)], 409 if isinstance(exc, WorkloadExists) else 422
    else:
        hub.dispatcher.wake()
        return RedirectResponse(f"/ui/workloads/{spec.name}", status_code=303)
    return await _form_page(
        request, hub, principal, form, editing=editing is not None, errors=errors, status=status
    )


@router.post("/ui/workloads")
async def create_from_form(request: Request, hub: HubDep, principal: OperatorDep) -> Response:
    return await _save(request, hub, principal)


@router.post("/ui/workloads/preview", response_class=HTMLResponse)
async def preview_fragment(request: Request, hub: HubDep, principal: ViewerDep) -> HTMLResponse:
    form = await _submitted(request)
    try:
        max_clusters = _integer(form.get("maxClusters"))
        placement = Placement.model_validate(
            {
                "labelSelector": form.get("labelSelector", ""),
                "clusters": form["clusters"],
                "maxClusters": max_clusters,
            }
        )
        result = await preview(hub, placement, principal.scope)
        errors: list[str] = []
    except (ValidationError, ValueError) as exc:
        result = {"clusters": [], "warnings": []}
        errors = _form_errors(exc) if isinstance(exc, ValidationError) else [str(exc)]
    html = templates_of(request).get_template("_preview.html").render(result=result, errors=errors)
    return HTMLResponse(html)


@router.get("/ui/workloads/{name}/edit", response_class=HTMLResponse)
async def edit_form(
    request: Request, name: str, hub: HubDep, principal: OperatorDep
) -> HTMLResponse:
    w = await store.get_workload(hub.engine, name, scope=visible_scope(principal))
    if w is None or w.deleting:
        raise HTTPException(404, f"unknown workload {name!r}")
    form = {
        "name": w.name,
        "manifests": yaml.safe_dump_all(w.manifests, sort_keys=False),
        "labelSelector": w.placement.get("labelSelector", ""),
        "clusters": w.placement.get("clusters", []),
        "maxClusters": w.placement.get("maxClusters") or "",
        "updateStrategy": w.update_strategy,
        "deleteOption": w.delete_option,
        "feedbackRules": orjson.dumps(w.feedback_rules).decode() if w.feedback_rules else "",
    }
    return await _form_page(request, hub, principal, form, editing=True)


@router.post("/ui/workloads/{name}")
async def update_from_form(
    request: Request, name: str, hub: HubDep, principal: OperatorDep
) -> Response:
    return await _save(request, hub, principal, editing=name)


@router.post("/ui/workloads/{name}/delete")
async def delete_from_form(
    request: Request, name: str, hub: HubDep, principal: OperatorDep
) -> Response:
    try:
        await store.mark_deleting(
            hub.engine,
            name,
            time.time(),
            hub.writer.lock,
            scope=visible_scope(principal),
            audit=audit_record(request, principal, "workload.delete", name),
        )
    except WorkloadNotFound:
        raise HTTPException(404, f"unknown workload {name!r}") from None
    hub.dispatcher.wake()
    return RedirectResponse("/ui/workloads", status_code=303)
