"""The oracle: every object the hub serves, against the truth of every cluster.

Per object (keyed by `apiVersion/Kind`, namespace, name):
- lost: in the truth, not in the hub;
- phantom: in the hub, not in the truth;
- stale-older / stale-newer: in both, but the hub's (uid, resourceVersion) differs; older if
  the hub's resourceVersion is below the truth's, newer otherwise (a different uid at a
  higher or equal resourceVersion is newer: a re-created cluster's leftovers).
Convergence is judged after churn has stopped, by polling the diff until it is empty or a
deadline passes; the time to converge is measured from the start of the polling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx

from tests.agent.fake_kube_truth import ObjectId, Truth

EXAMPLES = 3
CATEGORIES = ("lost", "stale_older", "stale_newer", "phantom")


@dataclass
class Diff:
    lost: int = 0
    stale_older: int = 0
    stale_newer: int = 0
    phantom: int = 0
    other_uid: int = 0
    """Of the stale ones, how many have another uid than the truth."""
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.lost or self.stale_older or self.stale_newer or self.phantom)

    def add(self, category: str, cluster: str, key: ObjectId, detail: str = "") -> None:
        setattr(self, category, getattr(self, category) + 1)
        samples = self.examples.setdefault(category, [])
        if len(samples) < EXAMPLES:
            samples.append(f"{cluster}: {key[0]} {key[1]}/{key[2]}{detail}")

    def counts(self) -> dict[str, int]:
        return {c: getattr(self, c) for c in (*CATEGORIES, "other_uid")}


def compare(diff: Diff, cluster: str, truth: Truth, hub: Truth) -> None:
    for key, (uid, rv) in truth.items():
        held = hub.get(key)
        if held is None:
            diff.add("lost", cluster, key)
        elif held != (uid, rv):
            detail = f" hub rv {held[1]} uid {held[0][:8]}, truth rv {rv} uid {uid[:8]}"
            diff.add("stale_older" if held[1] < rv else "stale_newer", cluster, key, detail)
            diff.other_uid += held[0] != uid
    for key in hub.keys() - truth.keys():
        diff.add("phantom", cluster, key)


class HubUnavailable(Exception):
    """The hub did not answer a list (down, 5xx, or a timeout)."""


async def hub_objects(http: httpx.AsyncClient, cluster: str) -> Truth:
    """Every live object the hub serves for `cluster`, paged 1000 at a time."""
    out: Truth = {}
    token: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 1000}
        if token:
            params["continue"] = token
        try:
            response = await http.get(f"/clusters/{cluster}/resources", params=params)
        except httpx.HTTPError as exc:
            raise HubUnavailable(repr(exc)) from exc
        if response.status_code == 404:
            return out
        if response.status_code != 200:
            raise HubUnavailable(f"HTTP {response.status_code}")
        page = response.json()
        for item in page["items"]:
            meta = item["metadata"]
            key = (f"{item['apiVersion']}/{item['kind']}", meta.get("namespace", ""), meta["name"])
            out[key] = (meta["uid"], int(meta["resourceVersion"]))
        token = page.get("continue")
        if not token:
            return out


async def diff_all(http: httpx.AsyncClient, truths: Mapping[str, Truth]) -> Diff:
    diff = Diff()
    for cluster, truth in truths.items():
        compare(diff, cluster, truth, await hub_objects(http, cluster))
    return diff


@dataclass
class Convergence:
    converged: bool
    seconds: float
    """Time to the first empty diff; the deadline if there was none."""
    diff: Diff
    polls: int
    unavailable: int
    """Polls the hub did not answer."""


async def converge(
    http: httpx.AsyncClient,
    truths: Callable[[], Awaitable[Mapping[str, Truth]]],
    *,
    deadline_s: float,
    poll_s: float = 1.0,
) -> Convergence:
    """Poll the diff until it is empty or `deadline_s` has passed."""
    started = time.monotonic()
    polls = unavailable = 0
    diff = Diff()
    while True:
        polls += 1
        try:
            diff = await diff_all(http, await truths())
        except HubUnavailable as exc:
            unavailable += 1
            diff = Diff(examples={"unavailable": [str(exc)]})
            diff.lost = -1  # unknown: the hub did not answer
        elapsed = time.monotonic() - started
        if diff.empty:
            return Convergence(True, elapsed, diff, polls, unavailable)
        if elapsed > deadline_s:
            return Convergence(False, elapsed, diff, polls, unavailable)
        await asyncio.sleep(poll_s)
