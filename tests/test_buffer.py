from actors.buffer import TraceBuffer


def test_bounded_and_refuses_when_full():
    buf = TraceBuffer(capacity=2)
    assert buf.put(["a"], version=0, traces=4) and buf.put(["b"], version=0, traces=4)
    assert not buf.put(["c"], version=0, traces=4)
    assert buf.stats()["refused_full"] == 1 and buf.stats()["depth"] == 2


def test_on_policy_drops_every_stale_batch():
    buf = TraceBuffer(capacity=8, max_policy_lag=0)
    buf.put(["old"], version=3, traces=1)
    buf.put(["new"], version=4, traces=1)
    assert buf.take(current_version=4, max_batches=5) == ["new"]
    assert buf.stats()["dropped_stale"] == 1 and buf.stats()["depth"] == 0


def test_lag_allows_recent_versions_in_fifo_order():
    buf = TraceBuffer(capacity=8, max_policy_lag=1)
    for ref, version in [("v1", 1), ("v2", 2), ("v3", 3)]:
        buf.put([ref], version=version, traces=1)
    assert buf.take(current_version=3, max_batches=1) == ["v2"]  # v1 is two versions old: dropped
    assert buf.take(current_version=3, max_batches=1) == ["v3"]
