"""Stage 1, the data: parallel pairs and English-only rows from their sources, the held-out
split, and a run's training items in memory (``dataset``) or on disk (``corpus``)."""
