"""The Aligned-spaces tab: teacher and student vectors of parallel sentences, one projection."""

from __future__ import annotations

import time

import gradio as gr

from kd.langs import parse_langs
from webapp import settings
from webapp.guards import check_data_dir
from webapp.model_cache import model_vectors
from webapp.session import Visitor, user_error
from webapp.settings import MAX_LANGS, MODEL_LABELS, PAIRS_DIR, SOURCES
from webapp.teacher_space import numbers_line, teacher_space_figure
from webapp.uploads import check_upload, read_upload


def builtin_langs() -> list[str]:
    """Languages of the built-in sentence set (assets/pairs/XX.tsv)."""
    return sorted(p.stem for p in PAIRS_DIR.glob("*.tsv"))


def points_limit(method: str) -> int:
    """Most sentences a model one Draw projects with ``method``: the cost cap (UMAP costs far
    more a point than PCA), ``settings.MAX_POINTS_BY_METHOD``.

    Raises:
        ValueError: an unknown projection.
    """
    limits = settings.MAX_POINTS_BY_METHOD
    if method not in limits:
        raise ValueError(f"unknown projection {method!r}; pick one of {', '.join(limits)}")
    return limits[method]


def limits_note() -> str:
    """Draw's cost cap in words, for the form."""
    caps = settings.MAX_POINTS_BY_METHOD
    return (
        "at most "
        + ", ".join(f"{n:,} sentences a model with {m.upper()}" for m, n in caps.items())
        + f", {settings.DRAW_MAX_CHARS:,} characters in all"
    )


def source_pairs(source: str, tatoeba_dir: str | None, upload: str | None, langs: list[str]):
    """The pairs of ``langs`` in one of the page's sources (:data:`webapp.settings.SOURCES`):
    kd's built-in sentences, a Tatoeba folder on the server, or a visitor's upload. Draw and
    Analyse read them here.

    Raises:
        ValueError: a language the built-in set lacks, a folder or upload that is missing or
            malformed, an upload with none of ``langs``, an unknown source.
    """
    from kd.data.pairs import read_tatoeba, read_tsv

    if source == SOURCES[0]:
        have = builtin_langs()
        missing = [lang for lang in langs if lang not in have]
        if missing:
            raise ValueError(
                f"the built-in set has no {', '.join(missing)}; it has {', '.join(have)} "
                "(or pick another source)"
            )
        pairs = [p for lang in langs for p in read_tsv(PAIRS_DIR / f"{lang}.tsv")]
    elif source == SOURCES[1]:
        folder = check_data_dir(tatoeba_dir)
        try:
            by_lang = read_tatoeba(folder, langs)
        except ValueError as err:  # name the folder as the visitor typed it
            raise ValueError(str(err).replace(str(folder), (tatoeba_dir or "").strip())) from None
        pairs = [p for lang in langs for p in by_lang[lang]]
    elif source == SOURCES[2]:
        file = check_upload(upload, "a .tsv file of english<TAB>translation lines")
        read = read_upload(file, langs)
        present = sorted({p.lang for p in read if p.other is not None})
        pairs = [p for p in read if p.lang in langs]
        if not pairs:
            raise ValueError(
                f"{file.name} has no pairs in {', '.join(langs)}; its languages: "
                f"{', '.join(present) or 'none'}"
            )
    else:
        raise ValueError(f"unknown sentence source {source!r}; pick one of {', '.join(SOURCES)}")
    return pairs


def sentence_set(
    source: str,
    tatoeba_dir: str | None,
    upload: str | None,
    langs_text: str,
    per_lang: int,
    method: str = "pca",
) -> tuple[list[str], list[str], list[int]]:
    """Sentences, their languages and pair ids: each English sentence once, then translations.

    Raises:
        ValueError: an unknown language, a missing or malformed source, more points than
            ``method``'s cap (:func:`points_limit`), more characters than
            ``settings.DRAW_MAX_CHARS``.
    """
    from kd.data.pairs import sample_per_lang

    limit = points_limit(method)
    langs = parse_langs(langs_text or "")
    if len(langs) > MAX_LANGS:
        raise ValueError(f"{len(langs)} languages; pick at most {MAX_LANGS}")
    langs = [lang for lang in langs if lang != "en"]
    if not langs:
        raise ValueError("pick at least one language besides English, e.g. de,fr,ja")
    per_lang = int(per_lang or 0)
    if per_lang < 1:
        raise ValueError("'sentences per language' must be at least 1")
    pairs = source_pairs(source, tatoeba_dir, upload, langs)
    pairs = [p for p in sample_per_lang(pairs, per_lang, seed=0) if p.other is not None]
    english = list(dict.fromkeys(p.en for p in pairs))
    ids = {en: i for i, en in enumerate(english)}
    sentences = english + [p.other for p in pairs]
    if len(sentences) > limit:
        other = [m.upper() for m, n in settings.MAX_POINTS_BY_METHOD.items() if n > limit]
        also = f", or use {' or '.join(other)}" if other else ""
        raise ValueError(
            f"that is {len(sentences):,} sentences per model; the limit with {method.upper()} "
            f"is {limit:,}: lower 'sentences per language' or pick fewer languages{also}"
        )
    chars = sum(len(s) for s in sentences)
    if chars > settings.DRAW_MAX_CHARS:
        raise ValueError(
            f"those {len(sentences):,} sentences hold {chars:,} characters; one Draw encodes at "
            f"most {settings.DRAW_MAX_CHARS:,} characters: lower 'sentences per language', pick "
            "fewer languages or shorter sentences"
        )
    if len(sentences) < 4:
        raise ValueError("fewer than 4 sentences; raise 'sentences per language'")
    lang_col = ["en"] * len(english) + [p.lang for p in pairs]
    return sentences, lang_col, [ids[en] for en in english] + [ids[p.en] for p in pairs]


def tatoeba_box(source: str):
    """The Tatoeba folder box: shown only while the Tatoeba source is picked, so no server path
    stands beside the built-in sentences."""
    return gr.update(visible=source == SOURCES[1])


def aligned_space(
    source: str,
    tatoeba_dir: str | None,
    upload: str | None,
    langs_text: str,
    per_lang: int,
    method: str,
    which: list[str] | None,
    teacher: str,
    student: str,
    visitor: Visitor | None,
):
    """Teacher and student vectors of parallel sentences, projected by one fit.

    Returns:
        (aligned scatter with one facet per model, Markdown with the numbers, DataFrame of the
        mean translation cosine per language and model in the original space, the teacher's
        space: teacher(en) anchors with the untrained and the distilled student's translations
        joined to them, one frame each).

    Raises:
        gr.Error: bad languages, a missing or malformed source, too many points, a bad model.
    """
    import numpy as np

    from viz.figures import aligned_scatter, empty_figure
    from viz.metrics import (
        projection_trustworthiness,
        translation_cosine,
        translation_cosine_by_lang,
    )
    from viz.project import is_warm, project_frame

    try:
        if not which:
            raise ValueError("pick at least one model to draw")
        sentences, langs, pair_ids = sentence_set(
            source, tatoeba_dir, upload, langs_text, per_lang, method
        )
        if source == SOURCES[2] and visitor is not None and str(upload) not in visitor.uploads:
            visitor.uploads.append(str(upload))  # deleted with the visitor's other files
        notes = []
        if "distilled" in which and (visitor is None or not visitor.student_dir):
            notes.append("No distilled student yet: run the Distill tab to add one.")
        vectors = model_vectors(sentences, teacher, student, visitor, which)
        if not vectors:
            raise ValueError("no model to draw; run the Distill tab or pick another model")
        dim = next(iter(vectors.values())).shape[1]
        joint = {name: v for name, v in vectors.items() if v.shape[1] == dim}
        for name in vectors.keys() - joint.keys():
            notes.append(
                f"*{name}* has {vectors[name].shape[1]}-d vectors, the others {dim}-d: it "
                "cannot share one map with them (its translation cosine is still listed)."
            )
        was_warm = is_warm()
        started = time.perf_counter()
        frame = project_frame(joint, langs, sentences, pair_ids, method)
        seconds = time.perf_counter() - started
        fig = aligned_scatter(frame, title=f"one {method.upper()} fit of {len(joint)} model(s)")
        trust = projection_trustworthiness(
            np.vstack(list(joint.values())), frame[["x", "y"]].to_numpy()
        )
        cos = translation_cosine_by_lang(vectors, langs, pair_ids)
        table = cos.pivot(index="lang", columns="model", values="cosine")
        table = table.reindex(columns=list(vectors)).round(3).reset_index()
        overall = translation_cosine(vectors, langs, pair_ids)
        every = model_vectors(sentences, teacher, student, visitor, list(MODEL_LABELS))
        space, numbers, space_note = teacher_space_figure(every, sentences, langs, pair_ids, method)
        lines = [
            f"**{len(sentences)} sentences per model** ({len(set(langs)) - 1} languages + "
            f"English), {method.upper()} in {seconds:.1f} s"
            + ("" if was_warm or method != "umap" else " (including UMAP's one-time compile)"),
            "",
            numbers_line(numbers) if numbers else space_note or "",
            "",
            "Within each model (each model's translation vs its own English vector; the "
            "untrained student scores high here because e5 aligns languages among themselves, "
            "in a space that is not the teacher's): "
            + ", ".join(f"*{m}* **{v:.3f}**" for m, v in overall.items()),
            "",
            f"Trustworthiness of the map: **{trust:.3f}** (1.0: neighbours on the map are "
            "neighbours in the original space).",
        ]
        if space is None:
            space = empty_figure(space_note or "nothing to draw in the teacher's space")
        return fig, "\n".join(lines + ([""] + notes if notes else [])), table, space
    except ValueError as err:
        raise user_error(str(err)) from None
