"""
Client authentication and authorisation, in the manner of etcd.

``state`` is the replicated part (users, roles, the enabled flag), applied by
the store; ``passwords``, ``tokens`` and ``limiter`` are each node's own
tools for checking who is asking.
"""
