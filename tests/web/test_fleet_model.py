"""The fleet overview's model, alone: filters, states, sorts, pages, summaries, caches."""

from __future__ import annotations

import dataclasses

from app.access.roles import ClusterScope
from app.informer.selectors import LabelSelector
from app.store.fleet import ClusterState
from app.web.fleet import FleetModel, FleetView, Group, Live


def states(count: int = 100) -> list[ClusterState]:
    """c000..c099: env prod/dev/staging in turn, region eu/us by halves of ten; every 10th
    (c009, c019, ...) offline; objects = index; c005 refusing."""
    return [
        ClusterState(
            f"c{i:03d}",
            {"env": ("prod", "dev", "staging")[i % 3], "region": ("eu", "us")[i // 10 % 2]},
            online=i % 10 != 9,
            last_seen=1000.0 + i,
            objects=i,
            refused=3 if i == 5 else 0,
        )
        for i in range(count)
    ]


def model(count: int = 100, **live: object) -> FleetModel:
    m = FleetModel(("env", "region"))
    m.replace(states(count))
    m.set_live(Live(**live))  # type: ignore[arg-type]
    return m


def names(m: FleetModel, **view: object) -> list[str]:
    return [r.name for r in m.page(FleetView(**view)).rows]  # type: ignore[arg-type]


def test_problems_come_first_then_names() -> None:
    m = model(over_quota=frozenset({"c020"}), unsynced=frozenset({"c030", "c039"}))
    first = names(m, size=14)
    offline = [f"c{i:03d}" for i in range(9, 100, 10)]
    assert first == [*offline, "c020", "c005", "c030", "c000"]  # c039: offline wins
    page = m.page(FleetView(size=14))
    assert [r.state for r in page.rows[10:14]] == ["over quota", "refusing", "not synced", "online"]
    assert page.rows[0].json()["state"] == "offline"


def test_the_summary_counts_each_cluster_at_its_worst_state() -> None:
    m = model(
        over_quota=frozenset({"c005", "c019", "nowhere"}),
        unsynced=frozenset({"c030", "c040", "c049"}),
        rates={"c001": 2.0, "c002": 0.5, "gone": 9.0},
    )
    s = m.page(FleetView()).summary
    assert (s.clusters, s.online, s.offline) == (100, 90, 10)
    # c005 is over quota and refusing: over quota; c019 is offline; c049 offline too
    assert (s.over_quota, s.refusing, s.unsynced) == (1, 0, 2)
    assert s.problems == 13
    assert s.objects == sum(range(100)) and s.rate == 2.5
    assert s.groups["env"][0] == Group("prod", 34, 4)
    assert {g.value for g in s.groups["region"]} == {"eu", "us"}


def test_group_values_beyond_the_most_common_are_counted_together() -> None:
    m = FleetModel(("team",))
    m.replace(
        [ClusterState(f"c{i:02d}", {"team": f"t{i % 20:02d}"}, True, 0.0, 0) for i in range(40)]
        + [ClusterState("lone", {}, False, 0.0, 0)]
    )
    groups = m.page(FleetView()).summary.groups["team"]
    assert len(groups) == 13 and all(g.clusters == 2 for g in groups[:12])
    assert groups[-1] == Group("", 41 - 24, 1)  # 8 teams and the unlabelled one


def test_search_labels_and_scope_filter_the_rows_and_the_summary() -> None:
    m = model()
    assert names(m, q="c01", sort="name") == [f"c{i:03d}" for i in range(10, 20)]
    prod_eu = m.page(FleetView(labels=LabelSelector.parse("env=prod,region=eu"), sort="name"))
    assert all(r.labels == {"env": "prod", "region": "eu"} for r in prod_eu.rows)
    assert prod_eu.summary.clusters == prod_eu.total == 17
    dev = m.page(FleetView(scope=ClusterScope.parse("env=dev")))
    assert dev.summary.clusters == 33 and {r.labels["env"] for r in dev.rows} == {"dev"}
    assert [g.value for g in dev.summary.groups["env"]] == ["dev"]
    assert m.page(FleetView(scope=ClusterScope.parse("env=dev"), q="c000")).total == 0


def test_show_narrows_to_one_state() -> None:
    m = model(over_quota=frozenset({"c020"}), unsynced=frozenset({"c030"}))
    assert names(m, show="offline") == [f"c{i:03d}" for i in range(9, 100, 10)]
    assert names(m, show="overquota") == ["c020"]
    assert names(m, show="refusing") == ["c005"]
    assert names(m, show="unsynced") == ["c030"]
    assert len(names(m, show="problems", size=200)) == 13
    assert m.page(FleetView(show="online")).total == 90


def test_sorts_go_both_ways_and_keep_names_in_order_among_equals() -> None:
    m = model(rates={"c050": 5.0, "c060": 7.0, "c070": 5.0})
    assert names(m, sort="name", size=3) == ["c000", "c001", "c002"]
    assert names(m, sort="name", desc=True, size=3) == ["c099", "c098", "c097"]
    assert names(m, sort="objects", desc=True, size=2) == ["c099", "c098"]
    assert names(m, sort="seen", size=2) == ["c000", "c001"]  # the longest silent first
    assert names(m, sort="rate", desc=True, size=4) == ["c060", "c050", "c070", "c000"]
    assert names(m, sort="rate", size=2) == ["c000", "c001"]


def test_pages_are_slices_and_a_page_past_the_end_shows_the_last() -> None:
    m = model()
    pages = [m.page(FleetView(sort="name", size=30, page=p)) for p in (1, 2, 3, 4)]
    assert [len(p.rows) for p in pages] == [30, 30, 30, 10]
    every = [n for p in (1, 2, 3, 4) for n in names(m, sort="name", size=30, page=p)]
    assert every == [f"c{i:03d}" for i in range(100)]
    past = m.page(FleetView(sort="name", size=30, page=99))
    assert past.page == past.pages == 4 and past.rows == pages[3].rows and past.first == 91
    empty = m.page(FleetView(q="nothing"))
    assert (empty.total, empty.page, empty.pages, empty.first) == (0, 1, 1, 0)


def test_a_new_read_and_new_live_sets_change_what_is_shown() -> None:
    m = model()
    view = FleetView(sort="state", size=12)
    assert names(m, sort="state", size=12)[10] == "c005"  # refusing after the 10 offline
    m.set_live(Live(over_quota=frozenset({"c001"})))
    assert names(m, sort="state", size=12)[10] == "c001"
    changed = states()
    changed[0] = dataclasses.replace(changed[0], online=False)
    changed.append(ClusterState("c100", {"env": "prod"}, True, 0.0, 0))
    m.replace(changed)
    page = m.page(view)
    assert page.rows[0].name == "c000" and page.summary.clusters == 101
    relabelled = [dataclasses.replace(s, labels={"env": "x"}) for s in changed]
    m.replace(relabelled)
    assert m.page(FleetView(labels=LabelSelector.parse("env=prod"))).total == 0


def test_views_are_cached_until_the_data_changes() -> None:
    m = model()
    view = FleetView(q="c0", sort="objects", desc=True)
    first = m.page(view)
    assert m.page(view).rows == first.rows
    m.set_live(Live(rates={"c001": 1.0}))  # rates alone keep the non-rate orders
    assert m.page(view).rows == first.rows
    assert m.page(dataclasses.replace(view, sort="rate")).rows[0].name == "c001"


def test_the_json_of_a_page_is_the_page() -> None:
    m = model(rates={"c009": 3.0})
    doc = m.page(FleetView(size=10)).json(now=5.0)
    assert len(doc["rows"]) == 10 and doc["total"] == 100 and doc["pages"] == 10
    assert doc["rows"][0] == {
        "name": "c009",
        "state": "offline",
        "stateLabel": "offline",
        "online": False,
        "lastSeen": 1009.0,
        "objects": 9,
        "rate": 3.0,
        "overQuota": False,
        "refused": 0,
        "unsynced": False,
    }
    assert doc["summary"]["groups"]["env"][0] == ["prod", 34, 4]
