import numpy as np
import pytest
import torch

from lnlkit.stages import StageCache


def test_a_stage_is_built_once_then_loaded(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"features": np.arange(6, dtype=np.float32).reshape(2, 3), "beta": 0.25,
                "state": {"w": torch.ones(2)}, "name": "x"}

    first = StageCache(tmp_path)
    a = first.run("features", {"k": 3, "data": "abc"}, build)
    second = StageCache(tmp_path)
    b = second.run("features", {"k": 3, "data": "abc"}, build)
    assert len(calls) == 1
    assert [r.status for r in first.records] == ["built"] and [r.status for r in second.records] == ["loaded"]
    assert first.records[0].key == second.records[0].key
    assert torch.equal(a["features"], b["features"]) and b["beta"] == 0.25 and b["name"] == "x"
    assert torch.equal(b["state"]["w"], torch.ones(2))
    StageCache(tmp_path).run("features", {"k": 4, "data": "abc"}, build)  # another dependency: another key
    assert len(calls) == 2


def test_a_torn_artefact_is_discarded_and_rebuilt(tmp_path):
    cache = StageCache(tmp_path)
    cache.run("s", {"a": 1}, lambda: {"v": torch.zeros(3)})
    (path,) = tmp_path.glob("s-*.pt")
    path.write_bytes(path.read_bytes()[:20])  # a crash of some other writer, a full disk ...
    again = StageCache(tmp_path)
    assert torch.equal(again.run("s", {"a": 1}, lambda: {"v": torch.ones(3)})["v"], torch.ones(3))
    assert again.records[0].status == "built"


def test_nested_stages_count_their_time_once(tmp_path):
    import time

    cache = StageCache(tmp_path)

    def outer():
        cache.run("inner", {}, lambda: time.sleep(0.2) or {"x": 1})
        return {"y": 2}

    cache.run("outer", {}, outer)
    inner, outer_record = cache.records
    assert inner.build_s >= 0.2 and outer_record.build_s < 0.1


def test_disabled_cache_builds_every_time_and_writes_nothing(tmp_path):
    cache = StageCache(enabled=False)
    cache.run("s", {}, lambda: {"v": 1})
    assert cache.records[0].status == "built, not cached" and cache.records[0].file is None
    with pytest.raises(TypeError, match="dict"):
        cache.run("bad", {}, lambda: [1, 2])
