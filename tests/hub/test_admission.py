"""The small policies of ingest, with a fake clock: quotas, relist pacing, dead letters."""

from __future__ import annotations

import itertools

from app.hub.dead_letters import DeadLetters
from app.hub.quota import ClusterQuota, QuotaSettings
from app.hub.relists import EVERYTHING, RelistLimiter
from app.informer.objects import KindKey

PODS = KindKey("v1", "Pod")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_cluster_within_its_quota_passes_and_one_over_it_is_dropped_alone() -> None:
    clock = Clock()
    quota = ClusterQuota(
        QuotaSettings(messages_per_s=10, message_burst=5, bytes_per_s=1e6, byte_burst=1e6),
        clock=clock,
    )
    assert all(quota.admit("noisy", 100) for _ in range(5))
    assert not quota.admit("noisy", 100)
    assert quota.admit("quiet", 100)
    (entered,) = quota.entered
    assert entered.cluster == "noisy"
    clock.now += 0.5  # 5 tokens back
    assert sum(quota.admit("noisy", 100) for _ in range(10)) == 5
    (over,) = quota.over()
    assert (over.cluster, over.dropped) == ("noisy", 6)


def test_bytes_are_limited_too() -> None:
    clock = Clock()
    quota = ClusterQuota(
        QuotaSettings(messages_per_s=1e6, message_burst=1e6, bytes_per_s=1000, byte_burst=1000),
        clock=clock,
    )
    assert quota.admit("c", 800)
    assert not quota.admit("c", 800)
    clock.now += 1
    assert quota.admit("c", 800)


def test_a_cluster_calm_for_long_enough_leaves_the_over_quota_state_once() -> None:
    clock = Clock()
    quota = ClusterQuota(QuotaSettings(messages_per_s=1, message_burst=1, calm_s=5), clock=clock)
    quota.admit("c", 1)
    quota.admit("c", 1)
    clock.now += 4
    assert quota.calmed() == []
    clock.now += 1
    (calm,) = quota.calmed()
    assert (calm.cluster, calm.dropped) == ("c", 1)
    assert quota.calmed() == [] and quota.over() == []


def test_the_calm_check_looks_only_at_clusters_over_quota() -> None:
    """`calmed` runs after every batch: with 10,000 clusters it must not walk them all."""
    clock = Clock()
    quota = ClusterQuota(QuotaSettings(messages_per_s=1, message_burst=1, calm_s=5), clock=clock)
    for i in range(10_000):
        quota.admit(f"c{i}", 1)
    quota.admit("c7", 1)  # over
    assert [o.cluster for o in quota.over()] == ["c7"]
    quota._buckets.clear()  # were the walk over every bucket, nothing would be found now
    clock.now += 5
    assert [c.cluster for c in quota.calmed()] == ["c7"]
    assert quota.over() == [] and quota.calmed() == []


def test_idle_buckets_are_forgotten_when_many_clusters_were_seen() -> None:
    clock = Clock()
    quota = ClusterQuota(QuotaSettings(), clock=clock, max_tracked=10)
    for i in range(10):
        quota.admit(f"c{i}", 1)
    clock.now += 60
    quota.admit("new", 1)
    assert len(quota._buckets) == 1


def test_relists_of_one_kind_back_off_while_they_keep_coming() -> None:
    clock = Clock()
    relists = RelistLimiter(base_s=5, cap_s=40, clock=clock)
    assert relists.allow("c", PODS)
    assert not relists.allow("c", PODS)
    assert relists.allow("c", EVERYTHING) and relists.allow("d", PODS)  # separate turns
    allowed_at = []
    for _ in range(200):
        clock.now += 1
        if relists.allow("c", PODS):
            allowed_at.append(clock.now - 1000)
    gaps = [b - a for a, b in itertools.pairwise(allowed_at)]
    assert gaps[:3] == [10, 20, 40] and set(gaps[3:]) == {40}
    assert relists.suppressed > 150


def test_after_a_quiet_interval_a_relist_goes_at_once_again() -> None:
    clock = Clock()
    relists = RelistLimiter(base_s=5, cap_s=40, clock=clock)
    for _ in range(3):
        assert relists.allow("c", PODS)
        clock.now += 100  # quiet for longer than the interval
    clock.now += 1
    assert relists.allow("c", PODS) and not relists.allow("c", PODS)


def test_dead_letters_keep_a_bounded_sample_and_say_what_they_skipped() -> None:
    clock = Clock()
    letters = DeadLetters(per_s=1, burst=3, clock=clock)
    for i in range(10):
        letters.add(
            cluster="junk",
            topic="t",
            type="",
            reason="not_json",
            detail=str(i),
            size=1,
            payload=b"x",
        )
    letters.add(
        cluster="other", topic="t", type="", reason="topic", detail="o", size=1, payload=b""
    )
    kept = letters.take()
    assert [r.detail for r in kept] == ["0", "1", "2", "o"]
    assert letters.dropped == 7
    clock.now += 1
    letters.add(
        cluster="junk", topic="t", type="", reason="not_json", detail="10", size=1, payload=b""
    )
    (next_one,) = letters.take()
    assert next_one.suppressed == 7
