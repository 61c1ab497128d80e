"""Fan-out backends: carry events to every server process.

``memory`` serves one process; ``postgres`` uses LISTEN/NOTIFY so several processes that
share one database all see every event. The hub never cares which one runs.
"""
