"""The teacher's space, drawn: English sentences as the teacher's anchors, translations by the
student joined to them, before and after distillation (the method's headline, as a picture).

Used by the Aligned-spaces tab (untrained and distilled student on the visitor's sentences)
and the Distill tab (the run's watch set, :mod:`kd.evaluate.watch`, frame by frame). Figures and
numbers come from ``viz``: :func:`viz.panels.teacher_space_panel` (the same panel ``kd plot``
draws), :func:`viz.project.teacher_space_journey` for the run's frames.
"""

from __future__ import annotations

import numpy as np

from webapp.settings import MODEL_LABELS


def _method() -> str:
    """UMAP once its compile has been paid (in the background at launch), else PCA."""
    from viz.project import is_warm

    return "umap" if is_warm() else "pca"


TEACHER_BASELINE = "teacher, reading the translations"
"""The baseline row: the English teacher given the translations themselves, i.e. what a model
that never learnt the other languages makes of them."""


def numbers_line(numbers: dict[str, dict]) -> str:
    """Markdown: each model's mean cos(student(x), teacher(en)) and retrieval into the
    teacher's space, with the pool the retrieval ranks among; the first entries are the
    baselines."""
    parts = [
        f"*{name}* cos **{n['mean_cos']:.3f}**, retrieval **{n['retrieval']:.3f}**"
        for name, n in numbers.items()
    ]
    first = next(iter(numbers.values()), {})
    pool = (
        f"retrieval: the share of the {first['n']} translations whose nearest of the "
        f"{first['pool']} English sentences shown is their own"
        if "n" in first and "pool" in first
        else "retrieval among the English sentences shown"
    )
    why = (
        f" *{TEACHER_BASELINE}* is the English teacher given the translations themselves: "
        "what a model that never learnt these languages makes of them."
        if TEACHER_BASELINE in numbers
        else ""
    )
    return (
        "In the teacher's space (each translation by the model named, against the teacher's "
        f"vector of its English sentence; {pool}): " + " · ".join(parts) + "." + why
    )


def teacher_space_figure(
    vectors: dict[str, np.ndarray],
    sentences: list[str],
    langs: list[str],
    pair_ids: list[int],
    method: str | None = None,
):
    """The Aligned tab's panel: frames "untrained" and "distilled" (where the visitor has one)
    of the student's translations among the teacher's English points.

    ``vectors``: model label -> (n, d) vectors of ``sentences`` (English rows first, as
    ``webapp.aligned.sentence_set`` builds them). Returns (figure or None, numbers by label,
    note or None); None when there is no teacher or no student in the teacher's width.
    """
    from viz.metrics import teacher_space_numbers
    from viz.panels import teacher_space_panel

    teacher = vectors.get(MODEL_LABELS["teacher"])
    if teacher is None:
        return None, {}, "The teacher's-space panel needs the teacher: tick it above."
    is_en = np.array([lang == "en" for lang in langs])
    rows = np.flatnonzero(~is_en)
    english = [s for s, en in zip(sentences, is_en, strict=True) if en]
    anchors = teacher[is_en]
    ids = np.array(pair_ids)[rows]
    # One name per student everywhere: the slider, the caption (which follows the slider) and
    # the numbers below say "student, distilled" as the page's other panels do.
    frames = {}
    for key in ("untrained", "prebuilt", "distilled"):
        v = vectors.get(MODEL_LABELS[key])
        if v is not None and v.shape[1] == teacher.shape[1]:
            frames[MODEL_LABELS[key]] = v[rows]
    baseline = {TEACHER_BASELINE: teacher_space_numbers(anchors, teacher[rows], ids)}
    if not frames:
        return None, baseline, "No student in the teacher's width to draw in its space."
    panel = teacher_space_panel(
        anchors,
        frames,
        [langs[i] for i in rows],
        [sentences[i] for i in rows],
        ids,
        method or _method(),
        en_sentences=english,
        title=f"the teacher's space: {len(english)} English sentences, teacher(en) ◆, and "
        f"{len(rows)} translations by the student joined to them",
        animated=False,  # gr.Plot drops a figure's frames: the slider carries each frame's data
    )
    numbers = baseline | panel.numbers
    return panel.figure, numbers, None


def journey_figure(watch, method: str | None = None):
    """The Distill tab's animation: the run's watch set (:class:`kd.evaluate.watch.WatchSet`), one
    frame per evaluation, from the untrained student to the distilled one."""
    from viz.figures import empty_figure, teacher_space_animation
    from viz.project import teacher_space_journey

    if watch is None or not watch.frames:
        return empty_figure("no held-out pairs to watch (raise 'held-out pairs per language')")
    df, numbers = teacher_space_journey(
        watch.teacher,
        watch.by_frame(),
        watch.langs,
        watch.texts,
        watch.pair_ids,
        method or _method(),
        en_sentences=watch.english,
    )
    return teacher_space_animation(
        df,
        title=f"{len(watch.english)} held-out English sentences and {len(watch.texts)} "
        "translations: the translations travel to teacher(en) ◆",
        caption_numbers=numbers if len(numbers) > 1 else None,
        frames=False,  # gr.Plot drops a figure's frames: the slider carries each frame's data
    )
