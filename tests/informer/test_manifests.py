"""The manifest shape check shared by the hub (refuses the workload) and the agent (refuses
to apply it): every bad shape is named in the message."""

from __future__ import annotations

from typing import Any

import pytest

from app.informer.manifests import InvalidManifest, check_manifest, check_manifests


def configmap(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "web", **metadata},
        "data": {"any": {"shape": ["below", "metadata", 1]}},
    }


@pytest.mark.parametrize(
    "manifest",
    [
        configmap(),
        configmap(namespace=None),
        configmap(namespace=""),
        configmap(labels={"app": "web"}, annotations={"note": ""}),
        configmap(labels=None, annotations=None),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    ],
)
def test_a_well_shaped_manifest_passes(manifest: dict[str, Any]) -> None:
    check_manifest(manifest)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("notadict", "manifest 3: must be an object, got str"),
        ({**configmap(), "apiVersion": ""}, "ConfigMap web/cfg: apiVersion must be a non-empty"),
        ({**configmap(), "kind": 5}, "manifest 3: kind must be a non-empty string"),
        ({"apiVersion": "v1", "kind": "ConfigMap"}, "ConfigMap: metadata must be an object"),
        ({**configmap(), "metadata": []}, "ConfigMap: metadata must be an object"),
        (configmap(name=""), "ConfigMap: metadata.name must be a non-empty string"),
        (configmap(name=["cfg"]), "ConfigMap: metadata.name must be a non-empty string"),
        (configmap(name="a/b"), "ConfigMap: metadata.name 'a/b' may not contain '/' or '%'"),
        (configmap(name="a%2F"), "metadata.name 'a%2F' may not contain '/' or '%'"),
        (configmap(name=".."), "metadata.name '..' may not be '.' or '..'"),
        (configmap(name="a\x00b"), "metadata.name 'a\\x00b' may not contain control characters"),
        (configmap(name="x" * 254), "metadata.name 'xxx"),
        (configmap(name="x" * 254), "is 254 characters, over 253"),
        (configmap(namespace={}), "ConfigMap cfg: metadata.namespace must be a string, got dict"),
        (configmap(namespace="n" * 64), "metadata.namespace 'nnn"),
        (configmap(namespace="a\nb"), "metadata.namespace 'a\\nb' may not contain control"),
        (
            configmap(labels="notadict"),
            "ConfigMap web/cfg: metadata.labels must map strings to strings (got str)",
        ),
        (
            configmap(labels={"replicas": 2}),
            "ConfigMap web/cfg: metadata.labels must map strings to strings ('replicas' maps to 2)",
        ),
        (
            configmap(annotations=["a"]),
            "ConfigMap web/cfg: metadata.annotations must map strings to strings (got list)",
        ),
        (
            configmap(annotations={"a": None}),
            "metadata.annotations must map strings to strings ('a' maps to None)",
        ),
    ],
)
def test_each_bad_shape_is_named(manifest: object, message: str) -> None:
    with pytest.raises(InvalidManifest) as raised:
        check_manifest(manifest, 3)
    assert message in str(raised.value)


def test_the_first_bad_manifest_of_a_list_is_reported_by_position() -> None:
    with pytest.raises(InvalidManifest, match=r"^manifest 2: kind must be a non-empty string$"):
        check_manifests([configmap(), {"apiVersion": "v1", "metadata": {"name": "x"}}])


def test_an_invalid_manifest_is_a_value_error() -> None:
    """So pydantic validators (the hub's WorkloadSpec) turn it into a 422 as it is."""
    assert issubclass(InvalidManifest, ValueError)
