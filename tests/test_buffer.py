"""The trace buffer: bounded by reservation, FIFO, stale batches dropped and counted."""
import pytest

from learner.driver.buffer import BufferFull, TraceBuffer
from protos import BatchInfo


def info(version: int) -> BatchInfo:
    return BatchInfo(policy_version=version, meta=[], rollout_s=0.0, rollout_tokens=0)


def test_bounded_by_reservation_and_never_drops_a_batch_silently():
    buf = TraceBuffer(capacity=2)
    buf.reserve(2)
    with pytest.raises(BufferFull, match="0 of 2 slots free"):
        buf.reserve(1)  # the loop would have to hold its next rollout back
    buf.put(info(0), "a")
    buf.put(info(0), "b")
    assert len(buf) == 2 and buf.free == 0
    with pytest.raises(BufferFull, match="without a reserved slot"):
        buf.put(info(0), "c")
    fresh, stale = buf.take(current_version=0, n=5)
    assert [h for _, h in fresh] == ["a", "b"] and stale == [] and buf.free == 2


def test_on_policy_drops_every_stale_batch_and_counts_it():
    buf = TraceBuffer(capacity=8, max_policy_lag=0)
    buf.reserve(2)
    buf.put(info(3), "old")
    buf.put(info(4), "new")
    fresh, stale = buf.take(current_version=4, n=5)
    assert [h for _, h in fresh] == ["new"] and [i.policy_version for i in stale] == [3]
    assert buf.dropped_stale == 1 and len(buf) == 0


def test_lag_allows_recent_versions_in_fifo_order():
    buf = TraceBuffer(capacity=8, max_policy_lag=1)
    buf.reserve(3)
    for handle, version in [("v1", 1), ("v2", 2), ("v3", 3)]:
        buf.put(info(version), handle)
    fresh, stale = buf.take(current_version=3, n=2)
    assert [h for _, h in fresh] == ["v2"] and len(stale) == 1  # v1 is two versions old: dropped, and said so
    assert [h for _, h in buf.take(current_version=3, n=1)[0]] == ["v3"]
