"""Stage 5, search: the SQLite vector index (``store``) and building and querying it with a
model (``index``)."""
