"""The snapshot meta a peer sends is checked before any of it is used (kvd/wal/snapshot.py)."""

from __future__ import annotations

from typing import Any

import pytest

from kvd.wal.snapshot import check_meta, snapshot_voter_sets

OLD = [["a", "ia"], ["b", "ib"], ["c", "ic"]]
NEW = [["a", "ia"], ["b", "ib"], ["d", "id"]]


@pytest.mark.parametrize("meta", [
    {}, {"voters": OLD}, {"voters": NEW, "joint": OLD}, {"voters": NEW, "joint": None},
])
def test_meta_as_take_snapshot_writes_it_passes(meta: dict[str, Any]) -> None:
    check_meta(meta)


@pytest.mark.parametrize("meta", [
    [], {"voters": 0}, {"voters": [["a"]]}, {"voters": NEW, "joint": 0},
    {"voters": NEW, "joint": [["a", 1]]}, {"voters": NEW, "joint": {"a": "ia"}},
    {"promised_epoch": "1"}, {"promised_leader": 1}, {"joint": OLD}, {"voters": [], "joint": OLD},
])
def test_malformed_meta_is_refused(meta: Any) -> None:
    with pytest.raises(ValueError):
        check_meta(meta)


def test_voter_sets_are_old_then_new_while_joint() -> None:
    assert snapshot_voter_sets({"voters": NEW, "joint": OLD}) == [dict(OLD), dict(NEW)]
    assert snapshot_voter_sets({"voters": NEW}) == [dict(NEW)]
    assert snapshot_voter_sets({}) == []
