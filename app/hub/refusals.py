"""What the hub does with what it refuses: count it, record it, log it, once.

Every refusal (a message, or one object of a message) is counted by reason (served on
`/metrics` and `GET /rejections`), kept as a dead-letter record (`dead_letters.py`:
rate-limited per cluster, written with the next transaction) and logged at WARNING at most
once a minute per cluster and reason, so a flood of bad messages does not flood the log.
The message itself is acknowledged by the caller: redelivering it could not make it valid.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

import orjson

from app.hub.dead_letters import DeadLetters
from app.informer.objects import KindKey
from app.transport.messages import RefusedObject

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


class Refusals:
    def __init__(self, dead_letters: DeadLetters, on_record: Callable[[], None]) -> None:
        self.counts: Counter[str] = Counter()
        self.dead_letters = dead_letters
        self._on_record = on_record
        """Called when a record waits to be written (the ingest loop wakes for it)."""
        self._last_logged: dict[tuple[str, str], float] = {}

    def reject(
        self,
        reason: str,
        topic: str,
        detail: str,
        *,
        cluster: str = "",
        type_: str = "",
        payload: bytes | str = b"",
        size: int = 0,
        object_: str = "",
        counted: bool = True,
    ) -> None:
        if counted:
            self.counts[reason] += 1
        self.dead_letters.add(
            cluster=cluster,
            topic=topic,
            type=type_,
            reason=reason,
            detail=detail,
            size=size or len(payload),
            payload=payload,
            object=object_,
        )
        self._on_record()
        now = time.monotonic()
        if now - self._last_logged.get((cluster, reason), -LOG_EVERY_S) >= LOG_EVERY_S:
            self._last_logged[(cluster, reason)] = now
            if len(self._last_logged) > 10_000:
                self._last_logged.clear()
            log.warning(
                "refused from cluster %r on %s (%s, %d so far): %s",
                cluster,
                topic,
                reason,
                self.counts[reason],
                detail,
            )

    def objects(
        self, cluster: str, topic: str, type_: str, refused: Sequence[RefusedObject]
    ) -> None:
        """Refuse events or snapshot items one by one, each recorded with its own JSON."""
        for r in refused:
            obj = r.item if isinstance(r.item, dict) else {}
            meta = obj.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            what = f"{obj.get('kind', '?')} {meta.get('namespace') or ''}/{meta.get('name', '?')}"
            try:
                payload = orjson.dumps(r.item)
            except (TypeError, orjson.JSONEncodeError):
                payload = b"(too deeply nested to show)"
            self.reject(
                r.reason,
                topic,
                r.detail,
                cluster=cluster,
                type_=type_,
                payload=payload,
                size=len(payload),
                object_=what[:600],
            )


def kind_of(item: object) -> KindKey | None:
    """The kind an item claims to be, if it names one."""
    if isinstance(item, dict):
        api_version, kind = item.get("apiVersion"), item.get("kind")
        if isinstance(api_version, str) and isinstance(kind, str) and api_version and kind:
            return KindKey(api_version, kind)
    return None
