"""A workload as users write it, checked at the edge (API and form) with clear messages.

The JSON schema of `WorkloadSpec` states the constraints the checks enforce (names,
the shape of a manifest, "a selector or names"), so the OpenAPI document describes what
the API accepts. YAML from the form is parsed without alias expansion bombs: see
`parse_manifests`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, SequenceNode

from app.informer.manifests import check_manifest
from app.informer.selectors import (
    LABEL_SELECTOR_PATTERN,
    MAX_SELECTOR_CHARS,
    LabelSelector,
    SelectorError,
)
from app.transport.topics import check_name

MAX_WORKLOAD_BYTES = 256 * 1024
"""A workload travels in one MQTT message; the hub accepts 512 KiB, so this leaves room."""
MAX_CLUSTERS = 10_000
MAX_YAML_CHARS = 512 * 1024
MAX_YAML_NODES = 100_000
"""Nodes of the YAML once every alias is expanded: a 256 KiB workload has far fewer."""
MAX_YAML_DEPTH = 100
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PATH = re.compile(r"^(\.[A-Za-z_][A-Za-z0-9_-]*(\[\d+\])?)+$")


class UpdateStrategy(StrEnum):
    SERVER_SIDE_APPLY = "ServerSideApply"
    CREATE_ONLY = "CreateOnly"
    READ_ONLY = "ReadOnly"


class DeleteOption(StrEnum):
    FOREGROUND = "Foreground"
    ORPHAN = "Orphan"


class Placement(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "description": "A label selector, cluster names, or both (at least one).",
            "anyOf": [
                {
                    "required": ["labelSelector"],
                    "properties": {"labelSelector": {"pattern": r"\S"}},
                },
                {"required": ["clusters"], "properties": {"clusters": {"minItems": 1}}},
            ],
        },
    )

    label_selector: str = Field(
        "",
        alias="labelSelector",
        max_length=MAX_SELECTOR_CHARS,
        json_schema_extra={"pattern": LABEL_SELECTOR_PATTERN},
    )
    clusters: list[str] = Field(
        default_factory=list,
        max_length=MAX_CLUSTERS,
        json_schema_extra={"items": {"type": "string", "pattern": NAME_PATTERN}},
    )
    max_clusters: int | None = Field(None, alias="maxClusters", ge=1, le=MAX_CLUSTERS)

    @field_validator("label_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        try:
            LabelSelector.parse(value)
        except SelectorError as exc:
            raise ValueError(f"labelSelector: {exc}") from None
        return value

    @field_validator("clusters")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            check_name(name)
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _something(self) -> Placement:
        if not self.label_selector.strip() and not self.clusters:
            raise ValueError("a placement needs a labelSelector, cluster names, or both")
        return self


class FeedbackRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    json_path: str = Field(alias="jsonPath", max_length=1024, pattern=_PATH.pattern)
    kind: str | None = Field(None, max_length=316)
    """Only objects of this kind (all when unset)."""

    @field_validator("json_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _PATH.match(value):
            raise ValueError(f"jsonPath {value!r} must look like .status.readyReplicas")
        return value


def _manifest_key(manifest: dict[str, Any], position: int) -> tuple[str, str, str, str]:
    check_manifest(manifest, position)  # the agent checks the same, and refuses the same
    meta = manifest["metadata"]
    return manifest["apiVersion"], manifest["kind"], meta.get("namespace") or "", meta["name"]


_SEGMENT = r"^(?!\.\.?$)[^/%\x00-\x1f\x7f]+$"
_STRING_MAP = {"type": ["object", "null"], "additionalProperties": {"type": "string"}}
MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Kubernetes object (the shape checked by app/informer/manifests.py).",
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"type": "string", "minLength": 1},
        "kind": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": _SEGMENT},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": _SEGMENT},
                "namespace": {
                    "anyOf": [
                        {"type": "string", "maxLength": 63, "pattern": r"^$|" + _SEGMENT},
                        {"type": "null"},
                    ]
                },
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
    },
}


class WorkloadSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    name: str = Field(max_length=63, pattern=NAME_PATTERN)
    manifests: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=1000,
        json_schema_extra={"items": MANIFEST_SCHEMA},
        description=f"Kubernetes objects, at most {MAX_WORKLOAD_BYTES} bytes as JSON, each "
        "object once; integers must fit in 64 bits",
    )
    placement: Placement
    update_strategy: UpdateStrategy = Field(
        UpdateStrategy.SERVER_SIDE_APPLY, alias="updateStrategy"
    )
    delete_option: DeleteOption = Field(DeleteOption.FOREGROUND, alias="deleteOption")
    feedback_rules: list[FeedbackRule] = Field(default_factory=list, alias="feedbackRules")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "workload")

    @field_validator("manifests")
    @classmethod
    def _manifests(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen: set[tuple[str, str, str, str]] = set()
        for position, manifest in enumerate(value, 1):
            key = _manifest_key(manifest, position)
            if key in seen:
                raise ValueError(f"duplicate object in the workload: {key[1]} {key[2]}/{key[3]}")
            seen.add(key)
        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError as exc:  # an integer past 64 bits, bytes from YAML
            raise ValueError(f"the manifests cannot be stored as JSON: {exc}") from None
        if size > MAX_WORKLOAD_BYTES:
            raise ValueError(f"the manifests are {size} bytes; the limit is {MAX_WORKLOAD_BYTES}")
        return value


def parse_manifests(text: str) -> list[dict[str, Any]]:
    """Multi-document YAML (or JSON) -> manifests; ValueError saying what does not parse.

    Aliases are composed as shared nodes and checked before anything is built: at most
    `MAX_YAML_NODES` nodes once expanded, `MAX_YAML_DEPTH` levels, no alias inside
    itself. A "billion laughs" document (aliases of aliases) is refused in microseconds
    instead of expanding to gigabytes when stored.
    """
    if len(text) > MAX_YAML_CHARS:
        raise ValueError(f"the YAML is {len(text)} characters; the limit is {MAX_YAML_CHARS}")
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
        budget, expanded = _Budget(), 0
        for node in nodes:
            if node is not None:
                expanded += budget.count(node, 1)
        if expanded > MAX_YAML_NODES:
            raise ValueError(f"the YAML expands to more than {MAX_YAML_NODES} nodes")
        docs = [SafeConstructor().construct_document(n) for n in nodes if n is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"the YAML does not parse: {exc}") from None
    except RecursionError:
        raise ValueError(f"the YAML nests deeper than {MAX_YAML_DEPTH} levels") from None
    docs = [d for d in docs if d is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            raise ValueError("every YAML document must be a Kubernetes object (a mapping)")
    if not docs:
        raise ValueError("no manifests given")
    return docs


class _Budget:
    """Counts the nodes a YAML graph expands to (each shared node once per use, from a
    memo, so the count costs one visit per distinct node)."""

    def __init__(self) -> None:
        self._sizes: dict[int, int] = {}
        self._open: set[int] = set()

    def count(self, node: Node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise ValueError(f"the YAML nests deeper than {MAX_YAML_DEPTH} levels")
        key = id(node)
        if key in self._open:
            raise ValueError("the YAML has an alias inside its own anchor (a cycle)")
        size = self._sizes.get(key)
        if size is None:
            self._open.add(key)
            size = 1
            if isinstance(node, SequenceNode):
                size += sum(self.count(child, depth + 1) for child in node.value)
            elif isinstance(node, MappingNode):
                size += sum(
                    self.count(k, depth + 1) + self.count(v, depth + 1) for k, v in node.value
                )
            self._open.discard(key)
            self._sizes[key] = size
            if size > MAX_YAML_NODES:
                raise ValueError(
                    f"the YAML expands to more than {MAX_YAML_NODES} nodes (aliases included)"
                )
        return size
