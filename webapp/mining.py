"""The Mine tab: the translation pairs hidden in two unaligned lists, with their margins.

Two lists (pasted, or uploaded as UTF-8 text files) are embedded by one student and mined with
:func:`kd.evaluate.mining.mine` (ratio margin over k nearest neighbours, both directions, the
``max`` strategy), as ``kd mine`` does. One Mine costs at most ``settings.MINE_MAX_LINES``
sentences a list and ``settings.MINE_MAX_CHARS`` characters in all, refused before any model is
asked (:func:`limits_note` states it on the page).
"""

from __future__ import annotations

from pathlib import Path

from kd.evaluate.mining import (
    DEFAULT_K,
    DEFAULT_STRATEGY,
    DEFAULT_THRESHOLD,
    PREBUILT_THRESHOLD,
    default_threshold,
)
from webapp import settings
from webapp.model_cache import checked_model, encode
from webapp.prebuilt import prebuilt_dir
from webapp.session import Visitor, user_error
from webapp.settings import MODEL_LABELS

__all__ = ["DEFAULT_THRESHOLD", "limits_note", "mine_lists", "miner_choices", "miner_threshold"]

RESULT_COLUMNS = ["rank", "margin", "source", "target"]
MINERS = ("prebuilt", "untrained", "distilled")
"""The models that may mine, by their key in ``settings.MODEL_LABELS``."""

EXAMPLE_SRC = "\n".join(
    [
        "Der Zug fährt um acht Uhr ab.",
        "Ich habe meinen Schlüssel verloren.",
        "Kannst du mir bitte das Salz geben?",
        "Die Bibliothek ist sonntags geschlossen.",
        "Wir gehen morgen ins Kino.",
        "Mein Bruder wohnt in Hamburg.",
    ]
)
EXAMPLE_TGT = "\n".join(
    [
        "We are going to the cinema tomorrow.",
        "The price of oil rose sharply last week.",
        "Could you pass me the salt, please?",
        "The train leaves at eight o'clock.",
        "Parliament will vote on the bill in March.",
        "I lost my key.",
        "The library is closed on Sundays.",
    ]
)
"""The page's example: six German sentences, five of whose translations hide among seven English
ones (two English sentences and one German are nobody's translation). Written by the team."""


def limits_note() -> str:
    """Mine's cost cap in words, for the page."""
    return (
        f"at most {settings.MINE_MAX_LINES:,} sentences a list and "
        f"{settings.MINE_MAX_CHARS:,} characters in both together, embedded by one model"
    )


def miner_choices() -> list[tuple[str, str]]:
    """(label, key) of the models offered: the pre-built student first where there is one."""
    keys = [key for key in MINERS if key != "prebuilt" or prebuilt_dir() is not None]
    return [(MODEL_LABELS[key], key) for key in keys]


def miner_threshold(which: str | None, student: str | None = None) -> float:
    """The least margin to start from for the chosen model: the one measured for it
    (:func:`kd.evaluate.mining.default_threshold`). A visitor's own student is not measured;
    it lives in the same teacher's space as the pre-built one, whose threshold it gets."""
    if which == "prebuilt":
        path = prebuilt_dir()
        return default_threshold(str(path)) if path is not None else DEFAULT_THRESHOLD
    if which == "untrained":
        return default_threshold(student)
    return PREBUILT_THRESHOLD


def _side(text: str | None, upload: str | None, what: str) -> list[str]:
    """One list's sentences: the uploaded file if there is one, else the text box."""
    from kd.data.pairs import clean_text
    from kd.evaluate.mining import read_sentences
    from webapp.uploads import check_upload

    if upload:
        file = check_upload(
            upload,
            f"the {what} file",
            suffixes=(".txt",),
            hint="upload a .txt file of one sentence a line (UTF-8)",
        )
        try:
            return read_sentences(file, settings.MINE_MAX_LINES)
        except ValueError as err:  # the temporary folder's name means nothing to the visitor
            raise ValueError(str(err).replace(str(file), file.name)) from None
    if len(text or "") > settings.MINE_MAX_CHARS:
        raise ValueError(
            f"the {what} list has {len(text):,} characters; one Mine takes at most "
            f"{settings.MINE_MAX_CHARS:,} in both lists together"
        )
    sentences = [s for s in (clean_text(line) for line in (text or "").splitlines()) if s]
    if not sentences:
        raise ValueError(f"the {what} list is empty; paste one sentence a line or upload a file")
    if len(sentences) > settings.MINE_MAX_LINES:
        raise ValueError(
            f"the {what} list has {len(sentences):,} sentences; one Mine takes at most "
            f"{settings.MINE_MAX_LINES:,} a list"
        )
    return sentences


def mining_lists(src_text, tgt_text, src_file, tgt_file) -> tuple[list[str], list[str]]:
    """The two lists, checked against the caps (``ValueError`` with the reason)."""
    src = _side(src_text, src_file, "source")
    tgt = _side(tgt_text, tgt_file, "target")
    chars = sum(map(len, src)) + sum(map(len, tgt))
    if chars > settings.MINE_MAX_CHARS:
        raise ValueError(
            f"the two lists hold {chars:,} characters; one Mine takes at most "
            f"{settings.MINE_MAX_CHARS:,}: mine fewer or shorter sentences"
        )
    return src, tgt


def _model(which: str, student: str, visitor: Visitor | None) -> tuple[str, bool]:
    """(model name, whether it is a name from the page) of the chosen miner."""
    if which == "prebuilt":
        path = prebuilt_dir()
        if path is None:
            raise ValueError("this server has no pre-built student; pick another model")
        return str(path), False
    if which == "untrained":
        return checked_model(student, visitor), True
    if which == "distilled":
        if visitor is None or not visitor.student_dir:
            raise ValueError("no distilled student yet; distil one in the Distill tab first")
        if not Path(visitor.student_dir).is_dir():
            raise ValueError("your distilled student has expired; run the Distill tab again")
        return visitor.student_dir, False
    raise ValueError(f"unknown model {which!r}; pick one of {', '.join(MINERS)}")


def _threshold(value) -> float:
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise ValueError("'least margin' must be a number, e.g. 1.06") from None
    if not 0.0 <= threshold <= 10.0:
        raise ValueError(f"'least margin' must be from 0 to 10, got {threshold}")
    return threshold


def mine_lists(
    src_text: str | None,
    tgt_text: str | None,
    src_file: str | None,
    tgt_file: str | None,
    which: str,
    threshold,
    student: str,
    visitor: Visitor | None,
):
    """Mine the translation pairs between the two lists with one model.

    Returns:
        (Markdown summary, DataFrame of the pairs: rank, margin, source, target; best first).

    Raises:
        gr.Error: an empty list, a list or file over the caps, a bad file, a model that fails.
    """
    import pandas as pd

    from kd.evaluate.mining import mine

    try:
        threshold = _threshold(threshold)
        src, tgt = mining_lists(src_text, tgt_text, src_file, tgt_file)
        name, public = _model(which, student, visitor)
        src_vecs = encode(name, src, public=public)
        tgt_vecs = encode(name, tgt, public=public)
        pairs = mine(
            src_vecs, tgt_vecs, k=DEFAULT_K, threshold=threshold, strategy=DEFAULT_STRATEGY
        )
    except ValueError as err:
        raise user_error(str(err)) from None
    rows = [
        {"rank": i, "margin": round(m.margin, 3), "source": src[m.src], "target": tgt[m.tgt]}
        for i, m in enumerate(pairs, start=1)
    ]
    k = min(DEFAULT_K, len(src), len(tgt))
    summary = (
        f"**{len(pairs)}** pairs with margin ≥ {threshold:g} between {len(src):,} source and "
        f"{len(tgt):,} target sentences, mined by *{MODEL_LABELS.get(which, which)}* (ratio "
        f"margin over {k} nearest neighbours, both directions, each sentence used once)."
    )
    if k < DEFAULT_K:
        summary += (
            f" With so few sentences the margin compares each pair with only {k} neighbours: "
            "it tells less than on longer lists."
        )
    return summary, pd.DataFrame(rows, columns=RESULT_COLUMNS)
