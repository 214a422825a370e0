"""
The HTTP side of a node: the public client API (``public``), the peer API
(``peer``), and the site both run on (``site``: limits, deadlines, refusals).
"""
