"""The workload admission policy, alone."""

from __future__ import annotations

from typing import Any

import pytest

from app.access.admission import AdmissionPolicy, KindPattern
from app.access.roles import Role

POLICY = AdmissionPolicy.from_settings("Secret,DaemonSet.apps", "kube-system")


def manifest(kind: str, namespace: str | None = "shop", api_version: str = "v1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x"}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


@pytest.mark.parametrize(
    ("doc", "rule"),
    [
        (manifest("ClusterRoleBinding", None, "rbac.authorization.k8s.io/v1"), "rbac"),
        (manifest("RoleBinding", "shop", "rbac.authorization.k8s.io/v1"), "rbac"),
        (manifest("Role", "shop", "example.com/v1"), "rbac"),  # any group
        (manifest("Namespace", None), "cluster-scoped"),
        (manifest("CustomResourceDefinition", None, "apiextensions.k8s.io/v1"), "cluster-scoped"),
        (manifest("ConfigMap", None), "namespace-required"),
        (manifest("ConfigMap", "kube-system"), "protected-namespace"),
        (manifest("Secret"), "admin-only-kind"),
        (manifest("DaemonSet", "shop", "apps/v1"), "admin-only-kind"),
    ],
)
def test_operators_are_refused_naming_the_rule(doc: dict[str, Any], rule: str) -> None:
    (refusal,) = POLICY.refusals([doc], Role.OPERATOR)
    assert refusal.rule == rule
    assert str(refusal).startswith(f"{doc['kind']} ") and f"(rule {rule})" in str(refusal)
    assert POLICY.refusals([doc], Role.ADMIN) == []


def test_namespaced_objects_pass_for_operators() -> None:
    docs = [manifest("ConfigMap"), manifest("Deployment", "shop", "apps/v1")]
    docs.append(manifest("DaemonSet", "shop", "example.com/v1"))  # not apps: not listed
    assert POLICY.refusals(docs, Role.OPERATOR) == []


def test_kind_patterns() -> None:
    assert KindPattern.parse("Secret.").matches("v1", "Secret")
    assert not KindPattern.parse("Secret.").matches("example.com/v1", "Secret")
    assert KindPattern.parse("Secret").matches("example.com/v1", "Secret")
    with pytest.raises(ValueError):
        KindPattern.parse(".apps")


def test_the_policy_describes_itself() -> None:
    described = POLICY.describe()
    assert described["adminOnlyKinds"] == ["Secret", "DaemonSet.apps"]
    assert described["protectedNamespaces"] == ["kube-system"]
    assert {r["rule"] for r in described["rules"]} >= {"rbac", "cluster-scoped"}
