"""The query layer: selectors in SQL, pagination, change-log replay."""

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.informer.deltas import ClusterHello, Upsert
from app.informer.objects import KindKey
from app.informer.selectors import FieldSelector, LabelSelector
from app.store import queries
from app.store.queries import BadCursor, ResourceQuery
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
