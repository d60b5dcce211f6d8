"""Workload admission: which manifests need the admin role.

Applying a workload is cluster-admin on every cluster it lands on (server-side apply,
forced), so what a workload may contain depends on who writes it. Admins may deploy
anything. Everyone else (operators) may deploy namespaced objects outside the protected
namespaces; each rule below refuses one way out of a namespace:

    rbac                 Role, RoleBinding, ClusterRole, ClusterRoleBinding (any group)
    cluster-scoped       kinds Kubernetes serves cluster-scoped (Namespace, CRDs, webhooks...)
    namespace-required   a manifest without metadata.namespace (an unknown kind might be
                         cluster-scoped; a namespaced one would land in `default`)
    protected-namespace  kube-system, kube-public, kube-node-lease (a setting)
    admin-only-kind      any kind an admin lists in the setting (e.g. Secret, DaemonSet.apps)

A kind is matched by its name in any API group unless the entry names a group
(`Kind.group`, `Kind.` for the core group): a custom `Role` in another group is refused
too, which costs nothing.

The hub only knows the scope of the kinds listed here: a custom resource whose kind is
cluster-scoped but whose manifest names a namespace is let through by these rules (the
cluster's API server drops the namespace). Keep such kinds in the admin-only list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.access.roles import Role

RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
CLUSTER_SCOPED_KINDS = (
    "APIService",
    "CertificateSigningRequest",
    "ClusterTrustBundle",
    "ComponentStatus",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "FlowSchema",
    "IngressClass",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PodSecurityPolicy",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "RuntimeClass",
    "StorageClass",
    "StorageVersionMigration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
    "VolumeAttributesClass",
)
DEFAULT_PROTECTED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")

RULES = {
    "rbac": "RBAC objects (Role, RoleBinding, ClusterRole, ClusterRoleBinding) need the admin role",
    "cluster-scoped": "cluster-scoped kinds need the admin role",
    "namespace-required": "operators' manifests must name their namespace",
    "protected-namespace": "objects in this namespace need the admin role",
    "admin-only-kind": "this kind is on the hub's admin-only list",
}


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


@dataclass(frozen=True, slots=True)
class KindPattern:
    """`Kind` (any group), `Kind.group`, or `Kind.` (the core group)."""

    kind: str
    group: str | None

    @classmethod
    def parse(cls, text: str) -> KindPattern:
        kind, dot, group = text.strip().partition(".")
        if not kind:
            raise ValueError(f"admin-only kind {text!r}: write Kind, Kind.group or Kind.")
        return cls(kind, group if dot else None)

    def matches(self, api_version: str, kind: str) -> bool:
        return kind == self.kind and (self.group is None or _group(api_version) == self.group)

    def __str__(self) -> str:
        return self.kind if self.group is None else f"{self.kind}.{self.group}"


@dataclass(frozen=True, slots=True)
class Refusal:
    object: str
    """`ClusterRoleBinding ops`, `Deployment kube-system/x`."""
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"{self.object}: {self.reason} (rule {self.rule})"


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    admin_only_kinds: tuple[KindPattern, ...] = ()
    protected_namespaces: tuple[str, ...] = DEFAULT_PROTECTED_NAMESPACES

    @classmethod
    def from_settings(cls, kinds: str, namespaces: str) -> AdmissionPolicy:
        """Comma-separated lists, as the settings hold them."""
        return cls(
            tuple(KindPattern.parse(k) for k in kinds.split(",") if k.strip()),
            tuple(n.strip() for n in namespaces.split(",") if n.strip()),
        )

    def refusals(self, manifests: Iterable[dict[str, Any]], role: Role) -> list[Refusal]:
        """Why each manifest is refused to `role` (empty: all admitted)."""
        if role >= Role.ADMIN:
            return []
        return [r for m in manifests if (r := self._refusal(m)) is not None]

    def _refusal(self, manifest: dict[str, Any]) -> Refusal | None:
        api_version = str(manifest.get("apiVersion", ""))
        kind = str(manifest.get("kind", ""))
        meta = manifest.get("metadata") if isinstance(manifest.get("metadata"), dict) else {}
        name = str(meta.get("name", "")) if meta else ""
        namespace = str(meta.get("namespace") or "") if meta else ""
        what = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"

        def refuse(rule: str, reason: str = "") -> Refusal:
            return Refusal(what, rule, reason or RULES[rule])

        if kind in RBAC_KINDS:
            return refuse("rbac")
        if kind in CLUSTER_SCOPED_KINDS:
            return refuse("cluster-scoped", f"{kind} is cluster-scoped: it needs the admin role")
        if not namespace:
            return refuse("namespace-required")
        if namespace in self.protected_namespaces:
            return refuse(
                "protected-namespace",
                f"namespace {namespace} is protected: it needs the admin role",
            )
        for pattern in self.admin_only_kinds:
            if pattern.matches(api_version, kind):
                return refuse("admin-only-kind", f"{pattern} is on the hub's admin-only list")
        return None

    def describe(self) -> dict[str, Any]:
        """The policy as `GET /policy` shows it."""
        return {
            "operatorsMay": "deploy namespaced objects that name their namespace, outside "
            "the protected namespaces; everything else needs the admin role",
            "rules": [{"rule": k, "description": v} for k, v in RULES.items()],
            "rbacKinds": list(RBAC_KINDS),
            "clusterScopedKinds": list(CLUSTER_SCOPED_KINDS),
            "adminOnlyKinds": [str(p) for p in self.admin_only_kinds],
            "protectedNamespaces": list(self.protected_namespaces),
        }
