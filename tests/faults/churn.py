"""A seeded churn generator for a fake API server: creates, modifies and deletes at a rate.

Contract: with the same seed, targets and rate, the same sequence of changes is made (the
timing of ticks only decides how many are due, never which). Every kind's count stays near
its target: creates and deletes lean towards it, the rest of the changes modify. Names come
from a per-kind sequence, so objects a `recreate` brings back keep their names, and a
`restore` only needs `refresh` to see which names exist again.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from tests.agent.fake_kube_api import FakeKubeApi, Obj

TICK_S = 0.02
MAX_CATCH_UP_S = 0.5
MODIFY_SHARE = 0.7
NAMESPACES = ("default", "web", "data", "batch")
APPS = ("web", "api", "db", "cache", "worker")


@dataclass(frozen=True, slots=True)
class KindPlan:
    plural: str
    share: float
    namespaced: bool = True


PLANS = (
    KindPlan("pods", 0.55),
    KindPlan("configmaps", 0.3),
    KindPlan("deployments", 0.13),
    KindPlan("nodes", 0.02, namespaced=False),
)
KINDS_FLAG = "v1/Pod,v1/ConfigMap,apps/v1/Deployment,v1/Node"
"""The agent's `--kinds` for the plans above."""


class _Names:
    """One kind's existing names, for O(1) random picks."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []
        self.positions: dict[tuple[str, str], int] = {}

    def add(self, key: tuple[str, str]) -> None:
        if key not in self.positions:
            self.positions[key] = len(self.keys)
            self.keys.append(key)

    def remove(self, key: tuple[str, str]) -> None:
        position = self.positions.pop(key)
        last = self.keys.pop()
        if last != key:
            self.keys[position] = last
            self.positions[last] = position


class Churn:
    """Changes `api` at `rate` per second while `run` is awaited (see the module doc)."""

    def __init__(self, api: FakeKubeApi, *, objects: int, rate: float, seed: int) -> None:
        self.api = api
        self.rate = rate
        self.changes = 0
        self._rng = random.Random(seed)
        self._targets = {plan.plural: max(1, round(objects * plan.share)) for plan in PLANS}
        self._plans = {plan.plural: plan for plan in PLANS}
        self._names = {plan.plural: _Names() for plan in PLANS}
        self._sequence = dict.fromkeys(self._targets, 0)

    def populate(self) -> None:
        """Create every kind's target count at once."""
        for plural, target in self._targets.items():
            for _ in range(target):
                self._create(plural)

    def refresh(self) -> None:
        """Take the names from the server again (after a `restore` brought others back)."""
        for plural, names in self._names.items():
            names.keys.clear()
            names.positions.clear()
            for key in self.api.keys(plural):
                names.add(key)

    async def run(self) -> None:
        """Make the changes due every tick until cancelled."""
        loop = asyncio.get_running_loop()
        last, owed = loop.time(), 0.0
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            owed += min(now - last, MAX_CATCH_UP_S) * self.rate
            last = now
            due = int(owed)
            owed -= due
            for _ in range(due):
                self.change_once()

    def change_once(self) -> None:
        plurals = list(self._targets)
        plural = self._rng.choices(plurals, weights=[self._targets[p] for p in plurals])[0]
        names = self._names[plural]
        target = self._targets[plural]
        if names.keys and self._rng.random() < MODIFY_SHARE:
            self._modify(plural, names.keys[self._rng.randrange(len(names.keys))])
        else:
            slack = max(1.0, target * 0.1)
            create_odds = 0.5 + (target - len(names.keys)) / (2 * slack)
            if not names.keys or self._rng.random() < create_odds:
                self._create(plural)
            else:
                key = names.keys[self._rng.randrange(len(names.keys))]
                names.remove(key)
                self.api.delete(plural, key[1], key[0])
        self.changes += 1

    def _create(self, plural: str) -> None:
        self._sequence[plural] += 1
        plan = self._plans[plural]
        app = self._rng.choice(APPS)
        namespace = self._rng.choice(NAMESPACES) if plan.namespaced else ""
        name = f"{app}-{plural[:-1]}-{self._sequence[plural]:06d}"
        fields = self._fields(plural, app)
        self.api.create(plural, name, namespace, **fields)
        self._names[plural].add((namespace, name))

    def _modify(self, plural: str, key: tuple[str, str]) -> None:
        namespace, name = key
        self.api.modify(plural, name, namespace, **self._fields(plural, name.split("-")[0]))

    def _fields(self, plural: str, app: str) -> Obj:
        rng = self._rng
        token = f"{rng.getrandbits(64):016x}"
        if plural == "pods":
            return {
                "spec": {
                    "nodeName": f"node-{rng.randrange(8)}",
                    "containers": [{"name": app, "image": f"registry.local/{app}:{token[:7]}"}],
                },
                "status": {"phase": rng.choice(("Pending", "Running", "Running", "Succeeded"))},
            }
        if plural == "configmaps":
            return {"data": {"settings": token * 4, "owner": app}}
        if plural == "deployments":
            return {"spec": {"replicas": rng.randrange(1, 6), "template": {"image": token}}}
        return {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": token}]}}
