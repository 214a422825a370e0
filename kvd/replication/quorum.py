"""
Who must hold an entry, answer a read round or answer NEWEPOCH (safety rule 4).

A cluster has one voter set, or two while a membership change is joint: the
old voters and the new. Every decision then needs a quorum of each set, so
that the old set alone and the new set alone can never decide apart. A set
of the size the cluster was configured with keeps its ``--write-quorum``;
another size takes a majority of itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvd.wal.record import LogEntry


def config_voter_sets(config: Mapping[str, Any]) -> list[dict[str, str]]:
    """A config command's voter sets: ``[voters]``, or ``[joint, voters]`` (old, new)
    for the first entry of a change."""
    new = {str(i): str(inc) for i, inc in config["voters"]}
    old = config.get("joint")
    return [{str(i): str(inc) for i, inc in old}, new] if old else [new]


def newest_config_sets(entries: Iterable[LogEntry]) -> list[dict[str, str]]:
    """The voter sets of the newest config command among ``entries``; none if none."""
    for entry in reversed(list(entries)):
        for command in reversed(entry.commands):
            if command.get("op") == "config":
                try:
                    return config_voter_sets(command)
                except (KeyError, TypeError, ValueError):
                    return []  # not a config a node would apply: it names nobody
    return []


def names_voter(sets: list[dict[str, str]], node_id: str, incarnation: object) -> bool:
    """Is (``node_id``, ``incarnation``) a voter of one of ``sets``?"""
    return any(s.get(node_id) == incarnation for s in sets)


def write_quorum_for(size: int, replicas: int, write_quorum: int) -> int:
    """W for a voter set of ``size``: the configured W at the configured N, else a
    majority (W + R > N holds either way, R being N - W + 1)."""
    return write_quorum if size == replicas else size // 2 + 1


@dataclass(frozen=True)
class VoterSet:
    """Voters (node id -> incarnation) and how many of them a write needs."""

    voters: Mapping[str, str]
    write_quorum: int

    @property
    def sync_quorum(self) -> int:
        """R: answers a candidate needs, so that they meet every W that committed."""
        return len(self.voters) - self.write_quorum + 1


class Quorums:
    """The voter sets a decision must satisfy, all of them (one, or two if joint)."""

    def __init__(self, sets: Sequence[VoterSet]) -> None:
        if not sets:
            raise ValueError("at least one voter set")
        self.sets = tuple(sets)

    @classmethod
    def single(cls, voters: Mapping[str, str], write_quorum: int) -> Quorums:
        return cls([VoterSet(dict(voters), write_quorum)])

    @property
    def joint(self) -> bool:
        return len(self.sets) > 1

    def union(self) -> dict[str, str]:
        """Every voter of any set: who gets NEWEPOCH and PREPAREs as a voter."""
        out: dict[str, str] = {}
        for voter_set in self.sets:
            out.update(voter_set.voters)
        return out

    def highest_held(self, held: Mapping[str, int]) -> int:
        """The highest index that W voters of every set hold (``held``: node id ->
        index held; a voter missing from it holds nothing)."""
        return int(self._at_w_in_every_set(held))

    def _at_w_in_every_set(self, values: Mapping[str, float]) -> float:
        """The highest value that W voters of every set are at or above (a voter
        missing from ``values`` is at 0): each set's W-th highest, the least of
        those; 0 if a set has fewer voters than its W."""
        found: float | None = None
        for voter_set in self.sets:
            ranked = sorted((values.get(v, 0) for v in voter_set.voters), reverse=True)
            if len(ranked) < voter_set.write_quorum:
                return 0
            at = ranked[voter_set.write_quorum - 1]
            found = at if found is None else min(found, at)
        return found or 0

    def reached(self, ids: Collection[str]) -> bool:
        """Do ``ids`` hold W voters of every set?"""
        return all(sum(1 for v in s.voters if v in ids) >= s.write_quorum for s in self.sets)

    def sync_reached(self, ids: Collection[str]) -> bool:
        """Do ``ids`` hold R voters of every set?"""
        return all(sum(1 for v in s.voters if v in ids) >= s.sync_quorum for s in self.sets)

    def latest_quorum_time(self, times: Mapping[str, float]) -> float:
        """The latest moment at which W voters of every set had all answered
        (``times``: node id -> last answer; 0 if no such moment)."""
        return float(self._at_w_in_every_set(times))

    def describe(self) -> dict[str, Any]:
        """For status pages: the voters and, while joint, the old set too."""
        newest = self.sets[-1]
        out: dict[str, Any] = {"voters": sorted(newest.voters),
                               "write_quorum": newest.write_quorum}
        if self.joint:
            out["joint_with"] = sorted(self.sets[0].voters)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quorums) and self.sets == other.sets

    def __hash__(self) -> int:
        return hash(tuple((tuple(sorted(s.voters.items())), s.write_quorum) for s in self.sets))

    def __repr__(self) -> str:
        return f"Quorums({[(sorted(s.voters), s.write_quorum) for s in self.sets]})"
