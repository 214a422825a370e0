"""Coordination through ZooKeeper: the kazoo-to-Twisted bridge and what builds on it."""
