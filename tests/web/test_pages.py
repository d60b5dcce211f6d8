"""The dashboard's pages and fragment streams, through a live hub (server side only)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from app.broker import Mosquitto
from app.informer.objects import KindKey
from tests.conftest import wait_until
from tests.harness import LiveHub, SseReader, synced_cluster

CONFIGMAP = KindKey("v1", "ConfigMap")
HOSTILE = '<script>alert("x")</script>'


async def html(hub: LiveHub, path: str, status: int = 200, **params: Any) -> str:
    response = await hub.http.get(path, params=params or None)  # {} would drop path's query
    assert response.status_code == status, response.text[:500]
    return response.text


def hostile_configmap() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "evil", "namespace": "default", "labels": {"note": HOSTILE}},
        "data": {"payload": HOSTILE},
    }


async def stored(hub: LiveHub, name: str) -> bool:
    return ("ConfigMap", f"default/{name}") in await hub.names("dev-1")


async def test_overview_lists_clusters_and_filters_by_label(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with synced_cluster(
        broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1", labels={"env": "dev"}
    ) as (hub, _agent, sim):
        page = await html(hub, "/")
        assert 'data-cluster="dev-1"' in page and "online" in page
        assert f">{sim.count()}<" in page  # total objects
        assert 'href="/static/vendor/htmx-2.0.11.min.js"' not in page  # scripts, not links
        assert 'src="/static/vendor/htmx-2.0.11.min.js"' in page
        assert "dev-1" not in await html(hub, "/", labelSelector="env=prod")
        bad = await html(hub, "/", 400, labelSelector="env in (")
        assert "bad selector" in bad


async def test_cluster_view_filters_sorts_and_pages(broker: Mosquitto, tmp_path: Path) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1", objects=120) as (
        hub,
        _agent,
        sim,
    ):
        page = await html(hub, "/ui/clusters/dev-1", kind="Pod")
        names = re.findall(r'<th scope="row"><a href="[^"]+">([^<]+)</a>', page)
        assert names and names == sorted(names)
        assert all(
            "/Pod/" in href for href in re.findall(r'href="(/ui/clusters/dev-1/[^"]+)"', page)
        )
        # the first page links to the next; the next page shows other objects
        token = re.search(r'continue=([^"&]+)', page)
        pods = sim.count(KindKey("v1", "Pod"))
        assert (token is not None) == (pods > 50)
        if token:
            second = await html(hub, f"/ui/clusters/dev-1?kind=Pod&sort=name&continue={token[1]}")
            more = re.findall(r'<th scope="row"><a href="[^"]+">([^<]+)</a>', second)
            assert more and not set(more) & set(names)
        # search narrows by name, case-insensitively
        target = names[0]
        found = await html(hub, "/ui/clusters/dev-1", q=target[:6].upper())
        assert target in found
        # htmx requests get the table fragment only
        fragment = (
            await hub.http.get(
                "/ui/clusters/dev-1", params={"sort": "age"}, headers={"HX-Request": "true"}
            )
        ).text
        assert fragment.lstrip().startswith('<section id="table"') and "<html" not in fragment
        await html(hub, "/ui/clusters/nope", 404)
        await html(hub, "/ui/clusters/dev-1", 400, **{"continue": "garbage"})
        await html(hub, "/ui/clusters/dev-1", 400, labelSelector="a in (")


async def test_untrusted_names_labels_and_data_render_as_text(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1") as (
        hub,
        _agent,
        sim,
    ):
        sim.apply(hostile_configmap())
        await wait_until(lambda: stored(hub, "evil"))
        for page in (
            await html(hub, "/ui/clusters/dev-1", kind="ConfigMap", q="evil"),
            await html(hub, "/ui/clusters/dev-1/ConfigMap/default/evil"),
        ):
            assert "<script>alert" not in page
            assert "&lt;script&gt;" in page


async def test_object_view_shows_yaml_history_and_deletion(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1") as (
        hub,
        _agent,
        sim,
    ):
        sim.apply(hostile_configmap())
        await wait_until(lambda: stored(hub, "evil"))
        page = await html(hub, "/ui/clusters/dev-1/ConfigMap/default/evil")
        assert '<span class="y-key">payload</span>' in page
        assert "ADDED" in page and "was deleted" not in page
        sim.delete(CONFIGMAP, "default", "evil")
        await wait_until(lambda: _not(stored(hub, "evil")))
        page = await html(hub, "/ui/clusters/dev-1/ConfigMap/default/evil")
        assert "was deleted" in page and "DELETED" in page
        await html(hub, "/ui/clusters/dev-1/ConfigMap/default/never", 404)


async def _not(coro: Any) -> bool:
    return not await coro


async def test_row_and_event_streams_send_rendered_changes(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1") as (
        hub,
        _agent,
        sim,
    ):
        since = int((await hub.get("/resources", limit=1))["resourceVersion"])
        sim.apply(hostile_configmap())
        await wait_until(lambda: stored(hub, "evil"))
        params = {"cluster": "dev-1", "since": str(since), "kind": "ConfigMap"}
        async with hub.http.stream("GET", "/ui/stream/rows", params=params) as response:
            (row,) = await SseReader(response).next(1)
        assert row["event"] == "rows" and 'data-op="ADDED"' in row["data"]
        assert "&lt;script&gt;" in row["data"] and "<script>" not in row["data"]
        async with hub.http.stream(
            "GET", "/ui/stream/events", params={"since": str(since), "q": "evil"}
        ) as response:
            (item,) = await SseReader(response).next(1)
        assert item["event"] == "change" and ">evil</a>" in item["data"].replace("default/", "")
        page = await html(hub, "/ui/events", cluster="dev-1")
        assert "/ui/stream/events?" in page and "cluster=dev-1" in page


async def test_a_view_older_than_the_log_is_told_to_reload(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with synced_cluster(
        broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1", hub={"retain_changes": 5}
    ) as (hub, _agent, _sim):
        await wait_until(lambda: _trimmed(hub), what="log trimmed")
        params = {"cluster": "dev-1", "since": "1"}
        async with hub.http.stream("GET", "/ui/stream/rows", params=params) as response:
            (notice,) = await SseReader(response).next(1)
        assert 'data-op="STALE"' in notice["data"]


async def _trimmed(hub: LiveHub) -> bool:
    from app.store import queries

    oldest = await queries.oldest_retained_revision(hub.hub.engine)
    return oldest is not None and oldest > 2


async def test_fleet_pulse_reports_every_cluster(broker: Mosquitto, tmp_path: Path) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1") as (
        hub,
        _agent,
        sim,
    ):
        async with hub.http.stream("GET", "/ui/stream/fleet") as response:
            reader = SseReader(response)
            summary: dict[str, Any] = {"rows": []}
            while [r["name"] for r in summary["rows"]] != ["dev-1"]:
                (event,) = await reader.next(1)
                summary = orjson.loads(event["data"])
        (cluster,) = summary["rows"]
        assert cluster["online"] is True and cluster["objects"] == sim.count()
        assert summary["summary"]["clusters"] == 1 and summary["total"] == 1
        static = await hub.http.get("/static/vendor/htmx-ext-sse-2.2.4.min.js")
        assert static.status_code == 200 and "sse-connect" in static.text


async def test_workload_form_validates_previews_creates_and_deletes(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with synced_cluster(
        broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1", labels={"env": "prod"}
    ) as (hub, _agent, _sim):
        assert "Create and deploy" in await html(hub, "/ui/workloads/new")
        manifests = (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\n"
            "  namespace: shop\ndata:\n  a: b\n"
        )
        form = {
            "name": "web",
            "manifests": manifests,
            "labelSelector": "env=prod",
            "updateStrategy": "ServerSideApply",
            "deleteOption": "Foreground",
        }
        preview = await hub.http.post("/ui/workloads/preview", data=form)
        assert "<code>dev-1</code>" in preview.text
        nothing = await hub.http.post(
            "/ui/workloads/preview", data={**form, "labelSelector": "env=none"}
        )
        assert "matches no cluster" in nothing.text
        for bad, message in (
            ({"manifests": "a: [unclosed"}, "does not parse"),
            ({"manifests": "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"}, "metadata.name"),
            (
                {"manifests": manifests.replace("shop\n", "shop\n  labels:\n    tier: 1\n")},
                "ConfigMap shop/c1: metadata.labels must map strings to strings",
            ),
            ({"labelSelector": "env in ("}, "labelSelector"),
        ):
            response = await hub.http.post("/ui/workloads", data={**form, **bad})
            assert response.status_code == 422 and message in response.text
        created = await hub.http.post("/ui/workloads", data=form)
        assert created.status_code == 303 and created.headers["location"] == "/ui/workloads/web"
        await wait_until(lambda: _available(hub), within=15, what="web available on dev-1")
        detail = await html(hub, "/ui/workloads/web")
        assert "Available" in detail and "Applied=True" in detail
        async with hub.http.stream("GET", "/ui/stream/workloads") as response:
            (listing,) = await SseReader(response).next(1)
        assert listing["event"] == "workloads" and "1 Available" in listing["data"]
        assert 'class="s-available"' in listing["data"]  # the bar, and the small fleet's matrix
        assert 'table class="matrix"' in listing["data"]
        assert "env=prod" in await html(hub, "/ui/workloads/web/edit")
        gone = await hub.http.post("/ui/workloads/web/delete")
        assert gone.status_code == 303
        await html(hub, "/ui/workloads/nope", 404)


async def _available(hub: LiveHub) -> bool:
    doc = await hub.get("/workloads/web")
    return [c["state"] for c in doc["clusters"]] == ["Available"]


def _object_links(page: str) -> list[str]:
    return re.findall(r'<th scope="row"><a href="([^"]+)">', page)


async def test_objects_of_colliding_kinds_link_to_themselves(two_events_hub: LiveHub) -> None:
    page = await html(two_events_hub, "/ui/clusters/c1", kind="Event")
    links = sorted(link for link in _object_links(page) if "/default/x" in link)
    assert links == [
        "/ui/clusters/c1/Event/default/x?apiVersion=events.k8s.io%2Fv1",
        "/ui/clusters/c1/Event/default/x?apiVersion=v1",
    ]
    group, core = [await html(two_events_hub, link) for link in links]
    assert "uid <code>grp-x</code>" in group and "uid <code>core-x</code>" in core
    await html(two_events_hub, "/ui/clusters/c1/Event/default/x", 409)


async def test_rows_of_colliding_kinds_have_ids_of_their_own_that_live_rows_reuse(
    two_events_hub: LiveHub,
) -> None:
    page = await html(two_events_hub, "/ui/clusters/c1", kind="Event")
    ids = set(re.findall(r'<tr id="([^"]+)"', page))
    assert len(ids) == 3
    params = {"cluster": "c1", "since": "0", "kind": "Event"}
    async with two_events_hub.http.stream("GET", "/ui/stream/rows", params=params) as response:
        replayed = await SseReader(response).next(3)  # the three ADDED, one a message
    assert {re.findall(r'<tr id="([^"]+)"', row["data"])[0] for row in replayed} == ids


async def test_counts_of_colliding_kinds_link_to_the_objects_they_count(
    two_events_hub: LiveHub,
) -> None:
    overview = await html(two_events_hub, "/")
    counts = re.findall(
        r'<a href="/ui/clusters/(c\d)\?kind=([^"]+)"><b>(\d+)</b> ([^<]+)</a>', overview
    )
    assert counts == [
        ("c1", "Event.", "2", "Event"),
        ("c1", "Event.events.k8s.io", "1", "Event.events.k8s.io"),
        ("c1", "Pod", "1", "Pod"),
        ("c2", "Event", "1", "Event"),
    ]
    for cluster, kind, n, _key in counts:
        listed = await html(two_events_hub, f"/ui/clusters/{cluster}", kind=kind)
        assert len(_object_links(listed)) == int(n)
    dropdown = await html(two_events_hub, "/ui/clusters/c1", kind="Event.")
    assert '<option value="Event." selected>Event (2)</option>' in dropdown
    assert '<option value="Event.events.k8s.io" >Event.events.k8s.io (1)</option>' in dropdown


async def test_an_object_page_links_to_its_own_kind_and_json(two_events_hub: LiveHub) -> None:
    core = await html(two_events_hub, "/ui/clusters/c1/Event./default/x")
    assert '<a href="/ui/clusters/c1?kind=Event.">Event</a>' in core
    assert 'href="/clusters/c1/resources/Event/default/x?apiVersion=v1"' in core
    group = await html(two_events_hub, "/ui/clusters/c1/Event.events.k8s.io/default/x")
    assert '<a href="/ui/clusters/c1?kind=Event.events.k8s.io">Event</a>' in group
    json_link = re.search(r'href="(/clusters/c1/resources/[^"]+)"', group)
    assert json_link is not None
    response = await two_events_hub.http.get(json_link[1])
    assert response.json()["metadata"]["uid"] == "grp-x"
    pod = await html(two_events_hub, "/ui/clusters/c1/Pod/default/p")
    assert '<a href="/ui/clusters/c1?kind=Pod">Pod</a>' in pod


async def test_the_cluster_views_all_kinds_and_all_namespaces_choices_filter_nothing(
    two_events_hub: LiveHub,
) -> None:
    # what the filter form sends when "all kinds" and "all namespaces" are chosen
    form = "kind=&namespace=&labelSelector=&q=&sort=name"
    page = await html(two_events_hub, f"/ui/clusters/c1?{form}")
    assert len(_object_links(page)) == 4
    pods = await html(two_events_hub, f"/ui/clusters/c1?{form.replace('kind=', 'kind=Pod')}")
    assert _object_links(pods) == ["/ui/clusters/c1/Pod/default/p?apiVersion=v1"]
