"""The Compare tab: cosine heatmaps of a visitor's sentences under each model."""

from __future__ import annotations

from webapp.model_cache import cut_sentences, model_vectors
from webapp.prebuilt import prebuilt_for
from webapp.session import Visitor, user_error
from webapp.settings import COMPARE_FILE, MAX_LINE_CHARS, MAX_LINES, MAX_TEXT_CHARS, MODEL_LABELS


def default_compare_text() -> str:
    """The Compare tab's prefilled sentences (assets/compare_sentences.tsv), one per line."""
    lines = COMPARE_FILE.read_text(encoding="utf-8").splitlines()[1:]
    return "\n".join(line.split("\t", 1)[1] for line in lines if "\t" in line)


def read_sentences(text: str | None) -> list[str]:
    """The sentences of a text box, one per line, cleaned; ``ValueError`` if unusable."""
    from kd.data.pairs import clean_text

    if text is None or not text.strip():
        raise ValueError("the text box is empty; type at least two sentences, one per line")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"the text has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}: "
            "compare fewer or shorter sentences"
        )
    sentences = [s for s in (clean_text(line) for line in text.splitlines()) if s]
    if len(sentences) < 2:
        raise ValueError("type at least two sentences, one per line")
    if len(sentences) > MAX_LINES:
        raise ValueError(f"{len(sentences)} sentences; compare at most {MAX_LINES} at a time")
    for i, s in enumerate(sentences, start=1):
        if len(s) > MAX_LINE_CHARS:
            raise ValueError(
                f"sentence {i} has {len(s):,} characters; the limit is {MAX_LINE_CHARS:,}"
            )
    return sentences


def closest_pairs(sentences: list[str], matrices: dict, top: int = 10):
    """The ``top`` most similar pairs of different sentences, ranked by the last model, whose
    column comes first (beside the rank, on screen however many models follow)."""
    import numpy as np
    import pandas as pd

    names = list(matrices)
    rank_by = matrices[names[-1]]
    i, j = np.triu_indices(len(sentences), k=1)
    keep = np.array([sentences[a] != sentences[b] for a, b in zip(i, j, strict=True)], dtype=bool)
    i, j = i[keep], j[keep]
    order = np.argsort(-rank_by[i, j], kind="stable")[:top]
    rows = {
        "rank": np.arange(1, len(order) + 1),
        f"cos ({names[-1]})": np.round(rank_by[i[order], j[order]], 3),
        "sentence A": [sentences[k] for k in i[order]],
        "sentence B": [sentences[k] for k in j[order]],
    }
    for name in names[:-1]:
        rows[f"cos ({name})"] = np.round(matrices[name][i[order], j[order]], 3)
    return pd.DataFrame(rows)


def refresh_compare(text: str, teacher: str, student: str, visitor: Visitor | None):
    """:func:`compare` again after a run, so the Compare tab shows the new student unasked (its
    own event: the page's /compare endpoint stays the button's)."""
    return compare(text, teacher, student, visitor)


def _cut_note(sentences, teacher, student, visitor, vectors) -> str:
    """ " · sentence 3 cut at 48 tokens by <model>" for each model that reads only the start of
    some sentences (a long sentence that differs only after the cut would embed alike)."""
    names = {MODEL_LABELS["teacher"]: (teacher, True), MODEL_LABELS["untrained"]: (student, True)}
    prebuilt = prebuilt_for(teacher)
    if prebuilt:
        names[MODEL_LABELS["prebuilt"]] = (prebuilt, False)
    if visitor is not None and visitor.student_dir:
        names[MODEL_LABELS["distilled"]] = (visitor.student_dir, False)
    notes = []
    for label, (name, public) in names.items():
        if label not in vectors:
            continue
        limit, cut = cut_sentences(name, sentences, public=public, visitor=visitor)
        if cut:
            which = ", ".join(map(str, cut))
            notes.append(f"sentence {which} cut at {limit} tokens by {label}")
    return "".join(f" · {n}" for n in notes)


def compare(text: str, teacher: str, student: str, visitor: Visitor | None):
    """Cosine heatmaps of the sentences for each model, and the closest pairs.

    Returns:
        (figure with one heatmap per model: teacher, untrained student, and the visitor's
        distilled student if they have one; DataFrame of the closest pairs, ranked by the last
        model).

    Raises:
        gr.Error: empty or oversized text, a model that cannot be loaded.
    """
    from viz.figures import similarity_heatmaps
    from viz.metrics import cosine_matrix

    try:
        sentences = read_sentences(text)
        vectors = model_vectors(sentences, teacher, student, visitor)
        matrices = {name: cosine_matrix(v) for name, v in vectors.items()}
        title = "cosine similarity"
        cuts = _cut_note(sentences, teacher, student, visitor, vectors)
        fig = similarity_heatmaps(matrices, sentences, title=f"{title}{cuts}")
        return fig, closest_pairs(sentences, matrices)
    except ValueError as err:
        raise user_error(str(err)) from None
