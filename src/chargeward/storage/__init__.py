"""Storage primitives below every package that keeps rows: the declarative base
(:mod:`.base`) and the batched writes of append-only rows (:mod:`.appends`).

Nothing here imports the server or the audit log; both build on it.
"""
