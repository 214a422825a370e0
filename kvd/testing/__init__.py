"""Helpers for tests and local runs: throw-away ZooKeeper servers and the like."""
