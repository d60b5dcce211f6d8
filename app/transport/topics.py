"""Topic layout, after Open Cluster Management's CloudEvents-over-MQTT transport.

    sources/<source>/consumers/<cluster>/agentevents    agent -> hub
    sources/<source>/consumers/<cluster>/sourceevents   hub -> agent

`<source>` names the hub deployment (several hub replicas share one source name); names
match `[a-z0-9-]+` so they never contain MQTT wildcards or separators.
"""

from __future__ import annotations

import re

DEFAULT_SOURCE = "transport-informer"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_name(name: str, what: str = "cluster") -> str:
    """Return `name` if it is a valid source or cluster name, else raise ValueError."""
    if not _NAME.match(name):
        raise ValueError(
            f"{what} name {name!r} must be 1-63 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def agent_events(source: str, cluster: str) -> str:
    return f"sources/{source}/consumers/{cluster}/agentevents"


def source_events(source: str, cluster: str) -> str:
    return f"sources/{source}/consumers/{cluster}/sourceevents"


def all_agent_events(source: str, share_group: str | None = None) -> str:
    """The hub's subscription; with a share group, replicas split the clusters' traffic."""
    topic = agent_events(source, "+")
    return f"$share/{share_group}/{topic}" if share_group else topic


def cluster_of(topic: str, source: str) -> str:
    """The cluster an agent-events topic belongs to; ValueError for any other topic."""
    parts = topic.split("/")
    if (
        len(parts) != 5
        or parts[0] != "sources"
        or parts[1] != source
        or parts[2] != "consumers"
        or parts[4] != "agentevents"
    ):
        raise ValueError(f"not an agent-events topic of source {source!r}: {topic!r}")
    return check_name(parts[3])
