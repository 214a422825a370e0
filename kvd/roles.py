"""The roles a node can be in, as ``GET /api/v1/cluster`` reports them."""

from enum import StrEnum


class Role(StrEnum):
    STANDALONE = "standalone"
    LOOKING = "looking"
    SYNCING = "syncing"
    LEADER = "leader"
    FOLLOWER = "follower"
