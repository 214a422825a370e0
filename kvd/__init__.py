"""kvd: a distributed, replicated, in-memory key-value store on Twisted."""
