import pytest

from app.informer.deltas import CheckDigest, Sweep, Upsert
from app.informer.digest import kind_digest
from app.informer.objects import InvalidObject, KindKey, object_ref
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


def snapshot(r: Reflector, sid: str, chunk: int, last: bool, names: list[str], rv: int = 10):  # type: ignore[no-untyped-def]
    return r.snapshot_chunk(
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
