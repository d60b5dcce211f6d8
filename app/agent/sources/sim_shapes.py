"""Plausible Kubernetes objects for the simulated cluster, and the random changes it makes.

Everything here is pure: each function takes the `random.Random` it draws from, so a seeded
cluster builds and changes the same objects every time. Identity fields the cluster owns
(uid, resourceVersion, creationTimestamp) are left for it to set.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from app.informer.objects import KindKey, KubeObject

NODE = KindKey("v1", "Node")
CONFIG_MAP = KindKey("v1", "ConfigMap")
SERVICE = KindKey("v1", "Service")
DEPLOYMENT = KindKey("apps/v1", "Deployment")
POD = KindKey("v1", "Pod")
DEFAULT_KINDS: tuple[KindKey, ...] = (NODE, CONFIG_MAP, SERVICE, DEPLOYMENT, POD)

NAMESPACES = ("default", "kube-system", "web", "data", "monitoring")
APPS = ("web", "api", "db", "cache", "worker")
TIERS = {"web": "frontend", "api": "backend", "db": "data", "cache": "data", "worker": "backend"}
IMAGES = {
    "web": "nginx",
    "api": "ghcr.io/example/api",
    "db": "postgres",
    "cache": "redis",
    "worker": "ghcr.io/example/worker",
}
PORTS = {"web": 80, "api": 8080, "db": 5432, "cache": 6379, "worker": 9090}

CLUSTER_SCOPED_KINDS = frozenset(
    {"Node", "Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}
)
KIND_WEIGHTS = {"Node": 1, "ConfigMap": 3, "Service": 2, "Deployment": 2, "Pod": 10}
"""Relative share of each kind in a cluster's objects; kinds not named here weigh 2."""

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the one Kubernetes uses for generated names


def is_cluster_scoped(kind: KindKey) -> bool:
    return kind.kind in CLUSTER_SCOPED_KINDS


def kind_weight(kind: KindKey) -> int:
    return KIND_WEIGHTS.get(kind.kind, 2)


def _suffix(rng: random.Random, length: int = 5) -> str:
    return "".join(rng.choice(_SUFFIX_ALPHABET) for _ in range(length))


def new_name(kind: KindKey, rng: random.Random, app: str) -> str:
    """A fresh name in the style Kubernetes controllers generate; the caller checks uniqueness."""
    if kind == NODE:
        return f"pool-{rng.choice('abc')}-{_suffix(rng)}"
    if kind == POD:
        return f"{app}-{_suffix(rng, 10)}-{_suffix(rng)}"
    if kind == CONFIG_MAP:
        return f"{app}-config-{_suffix(rng)}"
    if kind in (SERVICE, DEPLOYMENT):
        return f"{app}-{_suffix(rng)}"
    return f"{kind.kind.lower()}-{_suffix(rng)}"


def app_labels(app: str) -> dict[str, str]:
    return {"app": app, "tier": TIERS[app], "app.kubernetes.io/name": app}


def _container(rng: random.Random, app: str) -> dict[str, Any]:
    return {
        "name": app,
        "image": f"{IMAGES[app]}:1.{rng.randrange(10)}.{rng.randrange(10)}",
        "ports": [{"containerPort": PORTS[app], "protocol": "TCP"}],
        "resources": {"requests": {"cpu": f"{rng.choice((100, 250, 500))}m", "memory": "256Mi"}},
    }


def _condition(type_: str, ok: bool, now: str, reason: str) -> dict[str, str]:
    status = "True" if ok else "False"
    return {"type": type_, "status": status, "reason": reason, "lastTransitionTime": now}


def _pod(rng: random.Random, app: str, now: str, node: str) -> dict[str, Any]:
    running = rng.random() < 0.9
    container = _container(rng, app)
    return {
        "spec": {
            "containers": [container],
            "nodeName": node,
            "restartPolicy": "Always",
            "serviceAccountName": "default",
        },
        "status": {
            "phase": "Running" if running else "Pending",
            "conditions": [_condition("Ready", running, now, "PodReady")],
            "podIP": f"10.244.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "startTime": now,
            "containerStatuses": [
                {"name": app, "image": container["image"], "ready": running, "restartCount": 0}
            ],
        },
    }


def _deployment(rng: random.Random, app: str, now: str, node: str) -> dict[str, Any]:
    replicas = rng.randint(1, 5)
    return {
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": app_labels(app)},
                "spec": {"containers": [_container(rng, app)]},
            },
            "strategy": {"type": "RollingUpdate"},
        },
        "status": _deployment_status(replicas, replicas, 1, now),
    }


def _deployment_status(replicas: int, ready: int, generation: int, now: str) -> dict[str, Any]:
    available = _condition("Available", ready > 0, now, "MinimumReplicasAvailable")
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [available],
    }


def _service(rng: random.Random, app: str, now: str, node: str) -> dict[str, Any]:
    ip = f"10.96.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    port = {"name": "main", "port": PORTS[app], "targetPort": PORTS[app], "protocol": "TCP"}
    return {
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [port],
            "selector": {"app": app},
        },
        "status": {"loadBalancer": {}},
    }


def _config_map(rng: random.Random, app: str, now: str, node: str) -> dict[str, Any]:
    return {
        "data": {
            "LOG_LEVEL": rng.choice(("debug", "info", "warning")),
            "WORKERS": str(rng.randint(1, 16)),
            "config.yaml": f"app: {app}\nport: {PORTS[app]}\n",
        }
    }


def _node(rng: random.Random, app: str, now: str, node: str) -> dict[str, Any]:
    cpu = rng.choice((4, 8, 16))
    capacity = {"cpu": str(cpu), "memory": f"{cpu * 4}Gi", "pods": "110"}
    return {
        "spec": {"podCIDR": f"10.244.{rng.randrange(256)}.0/24"},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                _condition("MemoryPressure", False, now, "KubeletHasSufficientMemory"),
                _condition("Ready", True, now, "KubeletReady") | {"lastHeartbeatTime": now},
            ],
            "addresses": [{"type": "InternalIP", "address": f"10.0.0.{rng.randrange(1, 255)}"}],
            "nodeInfo": {
                "kubeletVersion": "v1.30.2",
                "containerRuntimeVersion": "containerd://1.7.18",
                "osImage": "Ubuntu 22.04.4 LTS",
                "kernelVersion": "6.5.0-1022",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _generic(rng: random.Random, app: str, now: str, node: str) -> dict[str, Any]:
    return {"spec": {"size": rng.randint(1, 100)}, "status": {"observed": 0}}


_Factory = Callable[[random.Random, str, str, str], dict[str, Any]]
_FACTORIES: dict[KindKey, _Factory] = {
    NODE: _node,
    CONFIG_MAP: _config_map,
    SERVICE: _service,
    DEPLOYMENT: _deployment,
    POD: _pod,
}


def build(
    kind: KindKey, rng: random.Random, *, name: str, namespace: str, app: str, now: str, node: str
) -> KubeObject:
    """A new object of `kind` in `namespace` ("": cluster-scoped), labelled for `app`.

    `node` is where a Pod runs; `now` is the timestamp status fields carry.
    """
    labels = app_labels(app)
    if kind == NODE:
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": rng.choice(("m5.xlarge", "c5.2xlarge")),
        }
    body = _FACTORIES.get(kind, _generic)(rng, app, now, node)
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "generation": 1}
    if not namespace:
        del meta["namespace"]
    meta["labels"] = labels
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta} | body


def _change_status(obj: KubeObject, rng: random.Random, now: str) -> bool:
    """Change what the kind's controller would; False if the kind has nothing to change."""
    kind, status = obj.get("kind"), obj.get("status")
    if kind == "Pod" and isinstance(status, dict):
        running = status.get("phase") != "Running"
        status["phase"] = "Running" if running else "Pending"
        status["conditions"] = [_condition("Ready", running, now, "PodReady")]
        for container in status.get("containerStatuses", []):
            container["ready"] = running
            container["restartCount"] += 0 if running else 1
        return True
    if kind == "Deployment" and isinstance(status, dict):
        spec, meta = obj["spec"], obj["metadata"]
        if rng.random() < 0.3:  # a scale: a spec change, so the generation moves
            spec["replicas"] = rng.randint(1, 5)
            meta["generation"] = meta.get("generation", 1) + 1
        replicas = spec["replicas"]
        ready = rng.randint(0, replicas)
        obj["status"] = _deployment_status(replicas, ready, meta.get("generation", 1), now)
        return True
    if kind == "Node" and isinstance(status, dict):
        ready = status["conditions"][-1]
        ready["lastHeartbeatTime"] = now
        if rng.random() < 0.05:
            ready["status"] = "False" if ready["status"] == "True" else "True"
            ready["lastTransitionTime"] = now
        return True
    if kind == "ConfigMap" and isinstance(obj.get("data"), dict):
        obj["data"]["LOG_LEVEL"] = rng.choice(("debug", "info", "warning", "error"))
        return True
    if isinstance(status, dict) and isinstance(status.get("observed"), int):
        status["observed"] += 1
        return True
    return False


def change(obj: KubeObject, rng: random.Random, now: str) -> None:
    """Change `obj` in place the way a live cluster does: mostly status, sometimes metadata."""
    roll = rng.random()
    if roll < 0.6 and _change_status(obj, rng, now):
        return
    meta = obj["metadata"]
    if roll < 0.8:
        labels = meta.setdefault("labels", {})
        labels["track"] = "canary" if labels.get("track") == "stable" else "stable"
    else:
        annotations = meta.setdefault("annotations", {})
        annotations["sim.transport-informer.io/touched-at"] = now
