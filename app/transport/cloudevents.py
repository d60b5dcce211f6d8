"""CloudEvents 1.0 in JSON structured mode: the envelope every MQTT message travels in.

    {"specversion": "1.0", "id": "...", "source": "...", "type": "...",
     "time": "2026-11-26T04:20:00Z", "datacontenttype": "application/json",
     "clustername": "prod-1", "data": {...}}

Decoding checks the envelope only; the payload (`data`) is checked by `messages`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

SPEC_VERSION = "1.0"
MAX_MESSAGE_BYTES = 512 * 1024
"""The hub rejects larger messages; agents chunk snapshots well below this."""


class MalformedMessage(ValueError):
    """A message that breaks the protocol. `reason` is a short code for counting
    (`oversized`, `not_json`, `unknown_type`, `bad_object`, `malformed`); the text says more."""

    def __init__(self, detail: str, reason: str = "malformed") -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CloudEvent:
    type: str
    source: str
    cluster: str
    data: dict[str, Any]
    id: str = ""
    time: str = ""


def encode(event: CloudEvent) -> bytes:
    return orjson.dumps(
        {
            "specversion": SPEC_VERSION,
            "id": event.id or uuid.uuid4().hex,
            "source": event.source,
            "type": event.type,
            "time": event.time or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "datacontenttype": "application/json",
            "clustername": event.cluster,
            "data": event.data,
        }
    )


def decode(payload: bytes) -> CloudEvent:
    """Parse and check an envelope; raise MalformedMessage saying what is wrong."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(
            f"oversized: {len(payload)} bytes > {MAX_MESSAGE_BYTES}", "oversized"
        )
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}", "not_json") from None
    if not isinstance(doc, dict):
        raise MalformedMessage("not a JSON object", "not_json")
    if doc.get("specversion") != SPEC_VERSION:
        raise MalformedMessage(f"specversion must be {SPEC_VERSION!r}")
    for field in ("id", "source", "type", "clustername"):
        if not isinstance(doc.get(field), str) or not doc[field]:
            raise MalformedMessage(f"missing field {field!r}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise MalformedMessage("missing field 'data' (a JSON object)")
    return CloudEvent(
        type=doc["type"],
        source=doc["source"],
        cluster=doc["clustername"],
        data=data,
        id=doc["id"],
        time=doc.get("time") or "",
    )


def encode_raw(type_: str, source: str, cluster: str, data_json: bytes) -> bytes:
    """Like `encode`, around `data` already serialized (lets senders size chunks exactly)."""
    head = orjson.dumps(
        {
            "specversion": SPEC_VERSION,
            "id": uuid.uuid4().hex,
            "source": source,
            "type": type_,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "datacontenttype": "application/json",
            "clustername": cluster,
        }
    )
    return head[:-1] + b',"data":' + data_json + b"}"


ENVELOPE_OVERHEAD = 400
"""Generous upper bound of the envelope's bytes around `data`."""
