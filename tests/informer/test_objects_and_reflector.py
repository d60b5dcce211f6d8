import orjson
import pytest

from app.informer.deltas import CheckDigest, Sweep, Upsert
from app.informer.digest import kind_digest
from app.informer.objects import (
    MAX_OBJECT_DEPTH,
    InvalidObject,
    KindKey,
    object_json,
    object_ref,
)
from app.informer.reflector import Reflector
from tests.objects import event, pod

PODS = KindKey("v1", "Pod")


def test_object_ref_extracts_identity() -> None:
    ref = object_ref(pod("a", 7, labels={"app": "web"}))
    assert (ref.kind, ref.namespace, ref.name, ref.resource_version) == ("Pod", "default", "a", 7)
    assert ref.labels == {"app": "web"}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.pop("kind"),
        lambda o: o["metadata"].pop("name"),
        lambda o: o["metadata"].pop("uid"),
        lambda o: o["metadata"].__setitem__("resourceVersion", "abc"),
        lambda o: o["metadata"].__setitem__("labels", {"a": 1}),
        lambda o: o.__setitem__("metadata", []),
    ],
)
def test_object_without_identity_is_invalid(mutate) -> None:  # type: ignore[no-untyped-def]
    obj = pod("a", 1)
    mutate(obj)
    with pytest.raises(InvalidObject):
        object_ref(obj)


def test_kind_key_parses_core_and_group_kinds() -> None:
    assert KindKey.parse("v1/Pod") == KindKey("v1", "Pod")
    assert KindKey.parse("apps/v1/Deployment") == KindKey("apps/v1", "Deployment")
    with pytest.raises(ValueError):
        KindKey.parse("Pod")


def test_digest_ignores_order() -> None:
    assert kind_digest([("a", 1), ("b", 2)]) == kind_digest([("b", 2), ("a", 1)])
    assert kind_digest([("a", 1)]) != kind_digest([("a", 2)])


def snapshot(  # type: ignore[no-untyped-def]
    r: Reflector, sid: str, chunk: int, last: bool, names: list[str], rv: int = 10, replace=False
):
    return r.snapshot_chunk(
        replace=replace,
        snapshot_id=sid,
        kind=PODS,
        chunk=chunk,
        last=last,
        resource_version=rv,
        items=[event("ADDED", n, 1) for n in names],
    )


def test_complete_snapshot_ends_with_a_sweep_of_everything_seen() -> None:
    r = Reflector("c1")
    first = snapshot(r, "s1", 0, False, ["a", "b"])
    assert [type(d) for d in first.deltas] == [Upsert, Upsert] and not first.relist
    r.watch([event("MODIFIED", "w", 5)])
    last = snapshot(r, "s1", 1, True, ["c"])
    sweep = last.deltas[-1]
    assert isinstance(sweep, Sweep)
    assert sweep.seen == {("default", n) for n in "abcw"} and sweep.resource_version == 10


def test_snapshot_with_a_gap_is_relisted_not_swept() -> None:
    r = Reflector("c1")
    snapshot(r, "s1", 0, False, ["a"])
    out = snapshot(r, "s1", 2, True, ["c"])
    assert out.relist == {PODS}
    assert not any(isinstance(d, Sweep) for d in out.deltas)


def test_chunk_of_unknown_snapshot_is_relisted() -> None:
    out = snapshot(Reflector("c1"), "never-started", 3, True, ["x"])
    assert out.relist == {PODS}


def test_digest_skips_kinds_with_a_snapshot_under_way() -> None:
    r = Reflector("c1")
    snapshot(r, "s1", 0, False, ["a"])
    assert r.digest({PODS: kind_digest([])}).deltas == []
    snapshot(r, "s1", 1, True, [])
    (check,) = r.digest({PODS: kind_digest([])}).deltas
    assert isinstance(check, CheckDigest)


def test_a_redelivered_chunk_is_not_a_gap() -> None:
    r = Reflector("c1")
    snapshot(r, "s1", 0, False, ["a"])
    snapshot(r, "s1", 1, False, ["b"])
    again = snapshot(r, "s1", 0, False, ["a"])  # the broker redelivered chunk 0
    assert not again.relist and [type(d) for d in again.deltas] == [Upsert]
    last = snapshot(r, "s1", 2, True, ["c"])
    assert not last.relist
    assert isinstance(last.deltas[-1], Sweep)
    assert last.deltas[-1].seen == {("default", n) for n in "abc"}


def test_a_late_chunk_of_a_finished_snapshot_changes_nothing_else() -> None:
    r = Reflector("c1")
    snapshot(r, "s1", 0, True, ["a"])
    late = snapshot(r, "s1", 0, True, ["a"])
    assert not late.relist and not any(isinstance(d, Sweep) for d in late.deltas)
    assert r.digest({PODS: kind_digest([])}).deltas  # nothing left open


def test_a_new_snapshot_supersedes_one_still_open() -> None:
    r = Reflector("c1")
    snapshot(r, "s1", 0, False, ["a"])
    snapshot(r, "s2", 0, False, ["b"])
    last = snapshot(r, "s2", 1, True, ["c"])
    assert not last.relist
    assert last.deltas[-1].seen == {("default", "b"), ("default", "c")}  # type: ignore[union-attr]


def test_a_snapshot_cut_by_a_hub_restart_is_relisted_once() -> None:
    r = Reflector("c1")  # a fresh hub: chunk 0 was applied before the restart
    assert snapshot(r, "s1", 3, False, ["x"]).relist == {PODS}
    for chunk in (4, 5, 6):
        leftover = snapshot(r, "s1", chunk, chunk == 6, ["y"])
        assert not leftover.relist
        assert [type(d) for d in leftover.deltas] == [Upsert]


def test_an_abandoned_snapshot_does_not_sweep() -> None:
    r = Reflector("c1")
    snapshot(r, "s1", 0, False, ["a"])
    r.abandon([PODS])
    last = snapshot(r, "s1", 1, True, ["b"])
    assert not any(isinstance(d, Sweep) for d in last.deltas)


def test_an_unseen_item_is_swept() -> None:
    r = Reflector("c1")
    snapshot(r, "s1", 0, False, ["a", "b"])
    r.unsee(PODS, ("default", "a"))
    last = snapshot(r, "s1", 1, True, [])
    assert last.deltas[-1].seen == {("default", "b")}  # type: ignore[union-attr]


def test_identity_fields_must_not_hold_nul() -> None:
    for field in ("name", "namespace", "uid"):
        obj = pod("a", 1)
        obj["metadata"][field] = "x\x00y"
        with pytest.raises(InvalidObject, match="U\\+0000"):
            object_ref(obj)
    obj = pod("a", 1, labels={"app": "x\x00y"})
    obj["data"] = {"k": "\x00"}
    assert object_ref(obj).labels == {"app": "x\x00y"}  # data may hold it, labels too


def _nested(depth: int) -> dict[str, object]:
    """A Pod whose nesting (the object itself is level 1) is exactly `depth`."""
    obj = pod("deep", 1)
    inner: dict[str, object] = {}
    for _ in range(depth - 3):  # pod -> spec -> deep -> ... levels
        inner = {"a": inner}
    obj["spec"] = {"deep": inner}
    return obj


def test_objects_nest_up_to_the_limit_and_no_deeper() -> None:
    assert object_json(_nested(MAX_OBJECT_DEPTH)) == orjson.dumps(_nested(MAX_OBJECT_DEPTH))
    for depth in (MAX_OBJECT_DEPTH + 1, 254, 300):
        with pytest.raises(InvalidObject, match="nest"):
            object_json(_nested(depth))
    wide = pod("wide", 1)
    wide["data"] = {f"k{i}": [{"x": [i]}] for i in range(500)}  # many brackets, shallow
    assert object_json(wide) == orjson.dumps(wide)


def test_replacing_snapshot_items_replace_unless_a_watch_event_touched_them_meanwhile() -> None:
    r = Reflector("c1")
    first = snapshot(r, "s1", 0, False, ["a", "b"], replace=True)
    assert all(isinstance(d, Upsert) and d.replace for d in first.deltas)
    r.watch([event("MODIFIED", "c", 12), event("DELETED", "d", 13)])
    second = snapshot(r, "s1", 1, True, ["c", "d", "e"])  # the flag of chunk 0 holds
    replaced = {d.event.ref.name: d.replace for d in second.deltas if isinstance(d, Upsert)}
    assert replaced == {"c": False, "d": False, "e": True}
    sweep = second.deltas[-1]
    assert isinstance(sweep, Sweep) and sweep.replace and ("default", "d") in sweep.seen
    late = snapshot(r, "s1", 1, True, ["x"])  # a redelivered chunk: guarded like an event
    assert not any(isinstance(d, Upsert) and d.replace for d in late.deltas)


def test_a_merging_snapshot_never_replaces() -> None:
    r = Reflector("c1")
    out = snapshot(r, "s1", 0, True, ["a"])
    assert not any(isinstance(d, Upsert | Sweep) and d.replace for d in out.deltas)
