"""Naming kinds that collide across API groups: `Kind`, `Kind.group`, `Kind.` (core)."""

import pytest

from app.informer.objects import KindKey
from app.store.kinds import KindRef, count_key_filter, count_keys, group_of

CORE_EVENT = KindKey("v1", "Event")
GROUP_EVENT = KindKey("events.k8s.io/v1", "Event")


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("Event", KindRef("Event", None)),
        ("Event.events.k8s.io", KindRef("Event", "events.k8s.io")),
        ("Deployment.apps", KindRef("Deployment", "apps")),
        ("Event.", KindRef("Event", "")),
    ],
)
def test_the_first_dot_separates_kind_from_group(text: str, ref: KindRef) -> None:
    assert KindRef.parse(text) == ref
    assert str(ref) == text


@pytest.mark.parametrize("text", ["", ".apps", "."])
def test_a_reference_without_a_kind_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="kind must look like"):
        KindRef.parse(text)


def test_group_of_the_core_api_version_is_empty() -> None:
    assert (group_of("v1"), group_of("apps/v1"), group_of("events.k8s.io/v1")) == (
        "",
        "apps",
        "events.k8s.io",
    )


def test_a_reference_admits_the_versions_of_its_group_only() -> None:
    assert KindRef("Event").admits("v1") and KindRef("Event").admits("events.k8s.io/v1")
    assert KindRef("Event", "").admits("v1") and not KindRef("Event", "").admits("apps/v1")
    assert not KindRef("Event", "events.k8s.io").admits("v1")


def test_counts_of_kinds_that_do_not_collide_are_keyed_by_kind() -> None:
    counts = {KindKey("v1", "Pod"): 3, KindKey("apps/v1", "Deployment"): 1, GROUP_EVENT: 2}
    assert count_keys(counts) == {"Deployment": 1, "Event": 2, "Pod": 3}


def test_colliding_kinds_are_keyed_by_group_and_core_keeps_the_bare_kind() -> None:
    counts = {CORE_EVENT: 4, GROUP_EVENT: 2, KindKey("v1", "Pod"): 1}
    assert count_keys(counts) == {"Event": 4, "Event.events.k8s.io": 2, "Pod": 1}


def test_two_versions_of_one_group_share_their_group_key() -> None:
    counts = {KindKey("autoscaling/v1", "HPA"): 1, KindKey("autoscaling/v2", "HPA"): 2}
    assert count_keys(counts) == {"HPA.autoscaling": 3}


def test_the_filter_of_a_count_key_lists_exactly_what_it_counted() -> None:
    keys = ["Event", "Event.events.k8s.io", "Pod"]
    assert [count_key_filter(k, keys) for k in keys] == ["Event.", "Event.events.k8s.io", "Pod"]
    assert count_key_filter("Event", ["Event", "Pod"]) == "Event"
