"""Torture testing for kvd: history recording and linearizability checking."""
