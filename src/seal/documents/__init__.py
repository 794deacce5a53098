"""The documents application: adapt a model to a user's own files and keep every adapter.

`reading` (documents in, chunks out), `adapt` (`seal adapt` / `seal ask`: write self-edits and
train an adapter per document), `versions` (`seal history`, `seal rollback`), `registry` (the
adapter registry on disk) and `oversight` (what a user must approve). It sits on the knowledge domain and the engine.
"""
