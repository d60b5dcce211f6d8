"""Presentation helpers for the HTML pages: pure functions, registered as Jinja filters.

Everything from clusters is untrusted: templates autoescape, and `yaml_html` escapes before
it adds its own markup.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import yaml
from markupsafe import Markup, escape


def row_id(cluster: str, api_version: str, kind: str, namespace: str, name: str) -> str:
    """A DOM id for an object's table row, stable across renders and streams.

    The apiVersion is part of it: `v1` and `events.k8s.io/v1` Events may share a name.
    """
    key = f"{cluster}/{api_version}/{kind}/{namespace}/{name}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return f"r-{digest}"


def ago(ts: float | None, now: float | None = None) -> str:
    """`12s`, `5m`, `3h`, `2d` since an epoch timestamp; `never` for none."""
    if not ts:
        return "never"
    seconds = max(0, int((now or time.time()) - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def age(obj: dict[str, Any], now: float | None = None) -> str:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not isinstance(created, str):
        return "-"
    try:
        ts = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "-"
    return ago(ts, now)


def status_summary(obj: dict[str, Any]) -> str:
    """One word or short phrase of status, as kubectl's STATUS / READY columns."""
    status = obj.get("status") or {}
    if not isinstance(status, dict):
        return ""
    if isinstance(status.get("phase"), str):
        return str(status["phase"])
    if "replicas" in status or obj.get("kind") == "Deployment":
        ready = status.get("readyReplicas", 0)
        wanted = (obj.get("spec") or {}).get("replicas", status.get("replicas", 0))
        return f"{ready}/{wanted} ready"
    for cond in conditions(obj):
        if cond.get("type") == "Ready":
            return "Ready" if cond.get("status") == "True" else "NotReady"
    return ""


def conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    found = (
        (obj.get("status") or {}).get("conditions") if isinstance(obj.get("status"), dict) else None
    )
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def to_yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


_KEY = re.compile(r"^(\s*(?:- )?)([^\s:#'\"][^:]*?)(:)(?=\s|$)")
_SCALAR = re.compile(r"(:\s+|^\s*- )(.+)$")


def _scalar_class(text: str) -> str:
    if text in ("true", "false", "null", "~"):
        return "y-const"
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return "y-num"
    return "y-str"


def yaml_html(obj: dict[str, Any]) -> Markup:
    """The object as YAML, escaped, with keys and scalars wrapped for highlighting."""
    out = []
    for line in to_yaml(obj).splitlines():
        key = _KEY.match(line)
        if key:
            rest = line[key.end() :]
            value = rest.strip()
            html = f'{escape(key.group(1))}<span class="y-key">{escape(key.group(2))}</span>:' + (
                f' <span class="{_scalar_class(value)}">{escape(value)}</span>' if value else ""
            )
        else:
            item = re.match(r"^(\s*- )(.+)$", line)
            html = (
                f'{escape(item.group(1))}<span class="{_scalar_class(item.group(2))}">'
                f"{escape(item.group(2))}</span>"
                if item
                else str(escape(line))
            )
        out.append(html)
    return Markup("\n".join(out))


def event_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def query_string(*mappings: dict[str, Any], **extra: Any) -> str:
    """Merge query parameters (later wins), drop empty ones, and encode them."""
    merged: dict[str, Any] = {}
    for mapping in (*mappings, extra):
        merged.update(mapping)
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


@dataclass(frozen=True, slots=True)
class BarSegment:
    state: str
    count: int
    x: float
    width: float


def bar_segments(counts: Mapping[str, int], width: float = 1000.0) -> list[BarSegment]:
    """A stacked bar of `counts` (in their order) as SVG x/width: no inline style, which the
    Content-Security-Policy forbids."""
    total = sum(counts.values())
    out, x = [], 0.0
    for state, n in counts.items():
        if n <= 0 or total <= 0:
            continue
        w = width * n / total
        out.append(BarSegment(state, n, round(x, 1), round(w, 1)))
        x += w
    return out
