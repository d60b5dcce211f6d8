"""Ground truth as the fault tests key it: every live object's uid and resourceVersion.

The fake API server's `GET /debug/truth` and the sim source's `GET /truth` (see
`app.agent.sources.sim.truth_endpoint`) serve the same JSON document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Document = dict[str, Any]

ObjectId = tuple[str, str, str]
"""(`apiVersion/Kind`, namespace, name): one object of a cluster, as the fault oracle keys it."""
Truth = dict[ObjectId, tuple[str, int]]
"""Every live object's uid and resourceVersion at one moment."""


def truth_document(resource_version: int, truth: Mapping[ObjectId, tuple[str, int]]) -> Document:
    """The JSON a truth endpoint serves (the sim source's debug endpoint serves the same)."""
    objects = [
        {"kind": kind, "namespace": ns, "name": name, "uid": uid, "resourceVersion": str(rv)}
        for (kind, ns, name), (uid, rv) in sorted(truth.items())
    ]
    return {"resourceVersion": str(resource_version), "objects": objects}


def parse_truth(document: Document) -> Truth:
    """The inverse of `truth_document`."""
    return {
        (o["kind"], o["namespace"], o["name"]): (o["uid"], int(o["resourceVersion"]))
        for o in document["objects"]
    }
