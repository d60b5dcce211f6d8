"""The query layer: selectors in SQL, pagination, change-log replay."""

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.informer.deltas import ClusterHello, Upsert
from app.informer.objects import KindKey
from app.informer.selectors import FieldSelector, LabelSelector
from app.store import queries
from app.store.kinds import KindRef
from app.store.queries import AmbiguousKind, BadCursor, ResourceQuery
from app.store.writer import InventoryWriter
from tests.objects import event


@pytest.fixture
async def filled(engine: AsyncEngine) -> AsyncEngine:
    writer = InventoryWriter(engine)
    deltas = [ClusterHello("c1", {}, (KindKey("v1", "Pod"),), 5, "1")]
    for i in range(30):
        labels = {"app": "web" if i % 3 == 0 else "api", "app.kubernetes.io/tier": "t"}
        if i % 5 == 0:
            labels["canary"] = "yes"
        ns = "prod" if i % 2 else "default"
        deltas.append(Upsert("c1", event("ADDED", f"p{i:02}", i + 1, labels=labels, namespace=ns)))
    deltas.append(Upsert("c2", event("ADDED", "elsewhere", 1, labels={"app": "web"})))
    deltas.append(Upsert("c1", event("ADDED", "d1", 99, kind="Deployment", api_version="apps/v1")))
    await writer.apply(deltas)
    return engine


async def names(engine: AsyncEngine, query: ResourceQuery) -> set[str]:
    page = await queries.list_resources(engine, query, limit=1000)
    return {item["metadata"]["name"] for item in page.items}


@pytest.mark.parametrize(
    ("selector", "count"),
    [
        ("app=web", 10),
        ("app!=web", 20),
        ("app in (web,api)", 30),
        ("app notin (web)", 20),
        ("canary", 6),
        ("!canary", 24),
        ("app=web,!canary", 8),
        ("app.kubernetes.io/tier=t", 30),
    ],
)
async def test_label_selectors_filter_in_sql(
    filled: AsyncEngine, selector: str, count: int
) -> None:
    query = ResourceQuery(cluster="c1", kind="Pod", labels=LabelSelector.parse(selector))
    assert len(await names(filled, query)) == count


async def test_field_selectors_and_namespace(filled: AsyncEngine) -> None:
    q = ResourceQuery(cluster="c1", fields=FieldSelector.parse("metadata.name=p03"))
    assert await names(filled, q) == {"p03"}
    q = ResourceQuery(cluster="c1", kind="Pod", namespace="prod")
    assert len(await names(filled, q)) == 15
    q = ResourceQuery(api_version="apps/v1")
    assert await names(filled, q) == {"d1"}


async def test_pages_cover_everything_once_and_keep_the_first_revision(
    filled: AsyncEngine,
) -> None:
    seen: list[str] = []
    cursor = None
    revisions = set()
    while True:
        page = await queries.list_resources(
            filled, ResourceQuery(kind="Pod"), limit=7, cursor=cursor
        )
        seen += [i["metadata"]["name"] for i in page.items]
        revisions.add(page.resource_version)
        if page.continue_token is None:
            break
        cursor = page.continue_token
    assert len(seen) == len(set(seen)) == 31
    assert revisions == {32}


@pytest.mark.parametrize("token", ["garbage!", "eyJ4IjoxfQ", "bnVsbA"])
async def test_bad_cursor_is_rejected(filled: AsyncEngine, token: str) -> None:
    with pytest.raises(BadCursor):
        await queries.list_resources(filled, ResourceQuery(), cursor=token)


async def test_all_clusters_query_tags_items_with_their_cluster(filled: AsyncEngine) -> None:
    page = await queries.list_resources(
        filled, ResourceQuery(labels=LabelSelector.parse("app=web,!canary")), limit=100
    )
    assert {i["cluster"] for i in page.items} == {"c1", "c2"}


async def test_changes_after_replays_in_order_with_filters(filled: AsyncEngine) -> None:
    page = await queries.changes_after(filled, 5, ResourceQuery(cluster="c1", kind="Pod"), limit=10)
    assert [c.revision for c in page.changes] == list(range(6, 16))
    assert not page.caught_up
    page = await queries.changes_after(
        filled, 0, ResourceQuery(labels=LabelSelector.parse("app=web")), limit=1000
    )
    assert len(page.changes) == 11 and page.caught_up


async def test_cluster_rows_count_live_objects_per_kind(filled: AsyncEngine) -> None:
    (row,) = await queries.cluster_rows(filled, "c1")
    assert row["counts"] == {"Pod": 30, "Deployment": 1}


CORE_EVENT = KindKey("v1", "Event")
EVENTS = "events.k8s.io/v1"
GROUP_EVENT = KindKey(EVENTS, "Event")


@pytest.fixture
async def two_events(engine: AsyncEngine) -> AsyncEngine:
    """c1 holds `default/x` both as a core Event and as an events.k8s.io Event; c2 holds
    only an events.k8s.io Event."""
    await InventoryWriter(engine).apply(
        [
            ClusterHello("c1", {}, (CORE_EVENT, GROUP_EVENT), 5, "1"),
            ClusterHello("c2", {}, (GROUP_EVENT,), 5, "1"),
            Upsert("c1", event("ADDED", "x", 1, kind="Event", uid="core-x")),
            Upsert("c1", event("ADDED", "y", 2, kind="Event", uid="core-y")),
            Upsert("c1", event("ADDED", "x", 3, kind="Event", api_version=EVENTS, uid="grp-x")),
            Upsert("c2", event("ADDED", "z", 4, kind="Event", api_version=EVENTS, uid="grp-z")),
        ]
    )
    return engine


async def test_cluster_rows_key_colliding_kinds_by_group(two_events: AsyncEngine) -> None:
    c1, c2 = await queries.cluster_rows(two_events)
    assert c1["counts"] == {"Event": 2, "Event.events.k8s.io": 1}
    assert c2["counts"] == {"Event": 1}  # alone in its cluster: the bare kind


@pytest.mark.parametrize(
    ("ref", "uids"),
    [
        (KindRef("Event"), {"core-x", "core-y", "grp-x"}),
        (KindRef("Event", ""), {"core-x", "core-y"}),
        (KindRef("Event", "events.k8s.io"), {"grp-x"}),
        (KindRef("Event", "apps"), set()),
    ],
)
async def test_a_group_narrows_lists_and_the_change_log_alike(
    two_events: AsyncEngine, ref: KindRef, uids: set[str]
) -> None:
    query = ResourceQuery(cluster="c1", kind=ref.kind, group=ref.group)
    page = await queries.list_resources(two_events, query)
    assert {i["metadata"]["uid"] for i in page.items} == uids
    replay = await queries.changes_after(two_events, 0, query)
    assert {c.body["metadata"]["uid"] for c in replay.changes} == uids


async def test_a_bare_kind_naming_two_api_versions_is_ambiguous(two_events: AsyncEngine) -> None:
    with pytest.raises(AmbiguousKind) as raised:
        await queries.get_resource(two_events, "c1", KindRef("Event"), "default", "x")
    assert str(raised.value) == (
        "Event default/x exists as v1 and events.k8s.io/v1; ask for Event. or Event.events.k8s.io"
    )


@pytest.mark.parametrize(
    ("ref", "api_version", "uid"),
    [
        (KindRef("Event", "events.k8s.io"), None, "grp-x"),
        (KindRef("Event", ""), None, "core-x"),
        (KindRef("Event"), "v1", "core-x"),
        (KindRef("Event"), EVENTS, "grp-x"),
    ],
)
async def test_a_group_or_an_api_version_picks_one_object(
    two_events: AsyncEngine, ref: KindRef, api_version: str | None, uid: str
) -> None:
    body = await queries.get_resource(
        two_events, "c1", ref, "default", "x", api_version=api_version
    )
    assert body is not None and body["metadata"]["uid"] == uid


async def test_a_bare_kind_that_names_one_object_finds_it(two_events: AsyncEngine) -> None:
    body = await queries.get_resource(two_events, "c1", KindRef("Event"), "default", "y")
    assert body is not None and body["metadata"]["uid"] == "core-y"


async def test_two_versions_of_one_group_are_ambiguous_until_the_version_is_given(
    engine: AsyncEngine,
) -> None:
    await InventoryWriter(engine).apply(
        [
            Upsert("c1", event("ADDED", "h", 1, kind="HPA", api_version="autoscaling/v1")),
            Upsert("c1", event("ADDED", "h", 2, kind="HPA", api_version="autoscaling/v2")),
        ]
    )
    with pytest.raises(AmbiguousKind, match=r"ask for HPA with apiVersion=autoscaling/v1 or HPA"):
        await queries.get_resource(engine, "c1", KindRef("HPA", "autoscaling"), "default", "h")
    body = await queries.get_resource(
        engine, "c1", KindRef("HPA"), "default", "h", api_version="autoscaling/v2"
    )
    assert body is not None and body["apiVersion"] == "autoscaling/v2"


async def test_the_stored_object_prefers_the_live_one_to_a_tombstone(
    two_events: AsyncEngine,
) -> None:
    await InventoryWriter(two_events).apply(
        [Upsert("c1", event("DELETED", "x", 5, kind="Event", uid="core-x"))]
    )
    stored = await queries.get_stored_object(two_events, "c1", KindRef("Event"), "default", "x")
    assert stored is not None and not stored.deleted
    assert stored.body["metadata"]["uid"] == "grp-x"
    history = await queries.object_history(two_events, "c1", CORE_EVENT, "default", "x")
    assert [h.type for h in history] == ["DELETED", "ADDED"]
