"""Stage 2, the models: the teacher and student encoders, the ids kd knows and where their
weights come from, and a student written, shipped and read back (full, a delta, a zip).

Nothing is imported here, so that ``kd.models.registry`` loads without torch."""
