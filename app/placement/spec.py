"""A workload as users write it, checked at the edge (API and form) with clear messages."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.informer.manifests import check_manifest
from app.informer.selectors import LabelSelector, SelectorError
from app.transport.topics import check_name

MAX_WORKLOAD_BYTES = 256 * 1024
"""A workload travels in one MQTT message; the hub accepts 512 KiB, so this leaves room."""
_PATH = re.compile(r"^(\.[A-Za-z_][A-Za-z0-9_-]*(\[\d+\])?)+$")


class UpdateStrategy(StrEnum):
    SERVER_SIDE_APPLY = "ServerSideApply"
    CREATE_ONLY = "CreateOnly"
    READ_ONLY = "ReadOnly"


class DeleteOption(StrEnum):
    FOREGROUND = "Foreground"
    ORPHAN = "Orphan"


class Placement(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    label_selector: str = Field("", alias="labelSelector")
    clusters: list[str] = Field(default_factory=list)
    max_clusters: int | None = Field(None, alias="maxClusters", ge=1)

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
    json_path: str = Field(alias="jsonPath")
    kind: str | None = None
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


class WorkloadSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    name: str
    manifests: list[dict[str, Any]] = Field(min_length=1)
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
        size = len(orjson.dumps(value))
        if size > MAX_WORKLOAD_BYTES:
            raise ValueError(f"the manifests are {size} bytes; the limit is {MAX_WORKLOAD_BYTES}")
        return value


def parse_manifests(text: str) -> list[dict[str, Any]]:
    """Multi-document YAML (or JSON) -> manifests; ValueError saying what does not parse."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"the YAML does not parse: {exc}") from None
    for doc in docs:
        if not isinstance(doc, dict):
            raise ValueError("every YAML document must be a Kubernetes object (a mapping)")
    if not docs:
        raise ValueError("no manifests given")
    return docs
