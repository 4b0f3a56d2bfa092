"""Projections and figures for the distillation demo: numpy/pandas in, plotly figures out.

- ``viz.project``: one shared 2-D fit (UMAP or PCA) of every model's vectors, cached.
- ``viz.figures``: aligned-space scatter, the teacher's space (students' translations against
  the teacher's English anchors, static or animated over training), similarity heatmaps,
  training curves, accuracy bars.
- ``viz.metrics``: translation cosine in the original space, a student against the teacher's
  English vectors (cosine, retrieval), trustworthiness of the map.
- ``viz.plot_cli``: write figures as standalone HTML (and PNG where kaleido can).

Importing ``viz`` imports none of these (UMAP alone takes seconds to import); no module here
imports gradio or ``kd``.
"""
