"""The teacher's-space panel, assembled once for every front end (``kd plot``, the app).

The teacher's vectors of the English sentences are the anchors; each frame is one student's
vectors of the translations, joined to their anchors in one shared projection
(:func:`viz.project.teacher_space_frames`), with the numbers beside them
(:func:`viz.metrics.teacher_space_numbers`) and the figure
(:func:`viz.figures.teacher_space_animation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from viz.figures import teacher_space_animation
from viz.metrics import teacher_space_numbers
from viz.project import teacher_space_frames


@dataclass
class TeacherSpacePanel:
    """What :func:`teacher_space_panel` made: the projected points (one row per translation and
    frame, plus the anchors), each frame's numbers, and the figure."""

    points: pd.DataFrame
    numbers: dict[str, dict]
    figure: go.Figure


def teacher_space_panel(
    anchors: np.ndarray,
    frames: Mapping[str, np.ndarray],
    langs: Sequence[str],
    texts: Sequence[str],
    ids: np.ndarray,
    method: str,
    *,
    en_sentences: Sequence[str],
    title: str,
    labels: Mapping[str, str] | None = None,
    animated: bool = True,
) -> TeacherSpacePanel:
    """The panel for ``frames`` (name -> (n, d) student vectors of ``texts``, row i joined to
    ``anchors[ids[i]]``), in that order: the first frame is the caption's baseline.

    ``labels`` renames frames in the caption (default: the frame names); ``animated=False``
    draws a slider that carries each frame's data instead of plotly frames (what ``gr.Plot``
    keeps).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a = rng.normal(size=(6, 8)); ids = np.arange(6)
        >>> p = teacher_space_panel(a, {"before": rng.normal(size=(6, 8)), "after": a}, ["de"] * 6,
        ...     [f"s{i}" for i in ids], ids, "pca", en_sentences=[f"e{i}" for i in ids], title="t")
        >>> p.numbers["after"]["retrieval"]
        1.0
    """
    numbers = {name: teacher_space_numbers(anchors, v, ids) for name, v in frames.items()}
    points = teacher_space_frames(
        anchors, dict(frames), list(langs), list(texts), ids, method, en_sentences=en_sentences
    )
    labels = labels or {}
    caption = {labels.get(name, name): n for name, n in numbers.items()}
    figure = teacher_space_animation(
        points,
        title=title,
        caption_numbers=caption if len(caption) > 1 else None,
        frames=animated,
    )
    return TeacherSpacePanel(points, numbers, figure)
