"""Semantic textual similarity (STS): does similarity, not only translation, survive distillation?

The STS benchmark scores sentence pairs from 0 (unrelated) to 5 (same meaning). A model's score
is Spearman's rank correlation, times 100, between the cosine of the two sentences' embeddings
and the gold score (Reimers & Gurevych 2020, their second evaluation). Two settings per
language x:

- ``"mono"``: both sentences in x, both embedded by the model;
- ``"cross"``: sentence1 in English embedded by the *teacher*, sentence2 in x embedded by the
  model. High only when similarity lives in the teacher's space, not just translation.

Data: one file per language, ``<lang>.dev.tsv``, a header ``sentence1<TAB>sentence2<TAB>score``
and one pair per line, row i being the same pair in every language (``../shared/data/
stsb-multi-dev``). English is required: it is the reference and the English side of "cross".

:func:`sts_report` is the one function the training run and ``kd eval --sts`` both call. Its
result, JSON-ready (every number is Spearman x 100, rounded to 0.01)::

    {
        "pairs": 1500,                      # scored pairs per language
        "langs": ["en", "de", "fr", ...],   # English first, then the others
        "teacher": {                        # the English teacher as a model
            "en": {"mono": 86.72, "cross": 86.72},  # en mono: the reference for every language
            "de": {"mono": 70.3, "cross": 40.38},   # what an English-only model manages in x
            ...,
            "mean": {"mono": 64.64, "cross": 32.56},  # over the languages other than English
        },
        "<model name>": {                   # one entry per model given: "student_untrained",
            "en": {"mono": 87.22, "cross": 5.55},   # "student_distilled", "model"...
            "de": {"mono": 84.47, "cross": 4.89},
            ...,
            "mean": {"mono": 82.33, "cross": 5.57},
        },
    }

(The numbers: all-MiniLM-L6-v2 as the teacher, the untrained multilingual-e5-small as the model,
on the STS benchmark's dev split.)

``"cross"`` is left out of a model's entries when its vectors and the teacher's differ in
dimension (their cosine is undefined). Each model embeds every distinct sentence once: all
languages go through one ``encode`` call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd.data.pairs import clean_text, read_text, text_lines
from kd.langs import DEV_LANGS, normalize_lang, parse_langs

logger = logging.getLogger("kd")

Encode = Callable[[list[str]], np.ndarray]

MAX_SCORE = 5.0
"""Gold scores run from 0 to this."""

_HEADER = ("sentence1", "sentence2", "score")


@dataclass(frozen=True, slots=True)
class StsSet:
    """The scored pairs of one language, row-aligned with the other languages' sets.

    Attributes:
        lang: the language code.
        sentence1: first sentences, cleaned by :func:`kd.data.pairs.clean_text`.
        sentence2: second sentences, row-aligned with ``sentence1``.
        scores: gold similarity of each pair, from 0 to 5.
        source: the file the pairs come from.

    Example:
        >>> s = StsSet("de", ("Ein Hund.",), ("Eine Katze.",), (1.5,), "de.dev.tsv")
        >>> len(s), s.scores[0]
        (1, 1.5)
    """

    lang: str
    sentence1: tuple[str, ...]
    sentence2: tuple[str, ...]
    scores: tuple[float, ...]
    source: str

    def __len__(self) -> int:
        return len(self.scores)


def _parse_score(path: Path, number: int, text: str) -> float:
    try:
        score = float(text)
    except ValueError:
        raise ValueError(f"{path}:{number}: the score {text.strip()!r} is not a number") from None
    if not math.isfinite(score) or not 0.0 <= score <= MAX_SCORE:
        raise ValueError(
            f"{path}:{number}: the score {text.strip()} is outside 0-{MAX_SCORE:g}; STS gold "
            "scores run from 0 (unrelated) to 5 (same meaning)"
        )
    return score


def read_sts_file(path: str | Path, lang: str) -> StsSet:
    """Read one ``sentence1<TAB>sentence2<TAB>score`` file (the header line is optional).

    Blank lines are ignored. Rows are never skipped, so that row i stays the same pair in every
    language.

    Raises:
        ValueError: naming ``file:line``: the file is missing, empty or not UTF-8; a line does
            not have exactly 3 tab-separated columns; a sentence is empty; a score is not a
            number from 0 to 5.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "en.dev.tsv"
        >>> _ = p.write_text("sentence1\\tsentence2\\tscore\\nA dog.\\tA cat.\\t1.2\\n")
        >>> read_sts_file(p, "en").scores
        (1.2,)
    """
    path = Path(path)
    text = read_text(path)
    first: list[str] = []
    second: list[str] = []
    scores: list[float] = []
    for number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise ValueError(
                f"{path}:{number}: expected 3 tab-separated columns (sentence1, sentence2, "
                f"score), found {len(cols)}"
            )
        if not scores and not first and tuple(c.strip().lower() for c in cols) == _HEADER:
            continue
        s1, s2 = clean_text(cols[0]), clean_text(cols[1])
        for name, sentence in (("sentence1", s1), ("sentence2", s2)):
            if not sentence:
                raise ValueError(
                    f"{path}:{number}: {name} is empty; every row needs two sentences (rows "
                    "are never skipped, to stay aligned with the other languages)"
                )
        scores.append(_parse_score(path, number, cols[2]))
        first.append(s1)
        second.append(s2)
    if not scores:
        raise ValueError(f"{path}: no scored pairs found (only a header?)")
    return StsSet(lang, tuple(first), tuple(second), tuple(scores), path.name)


def _present(directory: Path, split: str) -> dict[str, Path]:
    """Language -> file for every ``<lang>.<split>.tsv`` in the directory, in report order."""
    found: dict[str, Path] = {}
    for path in sorted(directory.glob(f"*.{split}.tsv")):
        code = path.name.removesuffix(f".{split}.tsv")
        try:
            found.setdefault(normalize_lang(code), path)
        except ValueError:
            logger.warning("%s: not a language code, file ignored", path)
    order = {lang: i for i, lang in enumerate(("en", *DEV_LANGS))}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def read_sts(
    directory: str | Path,
    langs: str | Iterable[str] | None = None,
    *,
    split: str = "dev",
    max_rows: int = 0,
) -> dict[str, StsSet]:
    """Read ``<lang>.<split>.tsv`` files: English plus the languages asked for (or all present).

    Args:
        directory: the folder holding the files, e.g. ``../shared/data/stsb-multi-dev``.
        langs: languages besides English (a comma-separated string or a list); ``None``: every
            language present. English is always read: it is the reference.
        split: the middle part of the file names.
        max_rows: keep the first N pairs of every language (0: all).

    Returns:
        language -> :class:`StsSet`, English first, all of one length.

    Raises:
        ValueError: the directory or a language's file is missing (the message lists the
            languages present), no language besides English, the files differ in row count or
            in a row's gold score, fewer than two distinct gold scores, or anything
            :func:`read_sts_file` raises.

    Example:
        >>> from pathlib import Path
        >>> dev = Path("../shared/data/stsb-multi-dev")
        >>> len(read_sts(dev, "de")["de"]) if dev.is_dir() else 1500
        1500
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(
            f"{directory}: not a directory; pass the folder holding <lang>.{split}.tsv files"
        )
    if max_rows < 0:
        raise ValueError(f"max_rows must be 0 (all) or positive, got {max_rows}")
    present = _present(directory, split)
    if not present:
        raise ValueError(f"{directory}: no <lang>.{split}.tsv files found (en.{split}.tsv, ...)")
    listing = ", ".join(present)
    wanted = [lang for lang in present if lang != "en"] if langs is None else parse_langs(langs)
    wanted = ["en", *(lang for lang in wanted if lang != "en")]
    if len(wanted) < 2:
        raise ValueError(
            f"{directory}: no language besides English to evaluate; languages present: {listing}"
        )
    sets: dict[str, StsSet] = {}
    for lang in wanted:
        path = present.get(lang, directory / f"{lang}.{split}.tsv")
        if not path.is_file():
            role = " (English is required: it is the reference)" if lang == "en" else ""
            raise ValueError(
                f"{path}: missing, so {lang!r} cannot be read{role}; languages present in "
                f"{directory}: {listing}"
            )
        sets[lang] = read_sts_file(path, lang)
    english = sets["en"]
    for s in sets.values():
        if len(s) != len(english):
            raise ValueError(
                f"{directory / s.source}: has {len(s)} scored pairs but {english.source} has "
                f"{len(english)}; row i must be the same pair in every language"
            )
        for i, (score, gold) in enumerate(zip(s.scores, english.scores, strict=True), start=1):
            if abs(score - gold) > 1e-6:
                raise ValueError(
                    f"{directory / s.source}: pair {i} has score {score:g} but pair {i} of "
                    f"{english.source} has {gold:g}; row i must be the same pair in every language"
                )
    if max_rows:
        sets = {
            lang: StsSet(
                lang, s.sentence1[:max_rows], s.sentence2[:max_rows], s.scores[:max_rows], s.source
            )
            for lang, s in sets.items()
        }
    if len(set(sets["en"].scores)) < 2:
        raise ValueError(
            f"{directory / english.source}: needs pairs with at least two different scores for "
            "a rank correlation" + (f"; keep more than {max_rows} rows" if max_rows else "")
        )
    return sets


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the average of the ranks they span."""
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first index of each run
    ends = np.r_[starts[1:], len(x)]  # one past its last
    group = np.repeat(np.arange(len(starts)), ends - starts)  # run of each sorted position
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2)[group]  # mean of ranks start+1 .. end
    return ranks


def spearman(a: Iterable[float], b: Iterable[float]) -> float:
    """Spearman's rank correlation of two sequences, in [-1, 1] (average ranks for ties).

    A constant sequence carries no order: the result is 0.0 (scipy returns nan).

    Raises:
        ValueError: the sequences differ in length, hold fewer than two values, or a value is
            not finite.

    Example:
        >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1])
        (1.0, -1.0)
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(
            f"spearman needs two sequences of one length, at least 2, got {len(x)} and {len(y)}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("spearman got nan or infinite values; check the embeddings")
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denom == 0.0:
        return 0.0
    return float(np.clip(rx @ ry / denom, -1.0, 1.0))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of row i of ``a`` with row i of ``b``: (n, d), (n, d) -> (n,).

    Example:
        >>> cosine_rows(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [-1.0, -1.0]]))
        array([ 1., -1.])
    """
    if a.shape != b.shape:
        raise ValueError(
            f"cosine needs row-aligned matrices of one shape, got {a.shape}, {b.shape}"
        )
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)  # (n,)


def sts_spearman_x100(emb1: np.ndarray, emb2: np.ndarray, scores: Iterable[float]) -> float:
    """Spearman x 100 between cos(emb1_i, emb2_i) and the gold scores, rounded to 0.01.

    Example:
        >>> e1 = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
        >>> e2 = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])  # cos 0, 0.71, 1
        >>> sts_spearman_x100(e1, e2, [0.5, 2.0, 5.0])
        100.0
    """
    return round(100 * spearman(cosine_rows(emb1, emb2), list(scores)), 2)


def embed_sts(
    sets: Mapping[str, StsSet], encode: Encode
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Embed both sides of every set with one ``encode`` call over the distinct sentences.

    Returns:
        language -> (sentence1 vectors (n, d), sentence2 vectors (n, d)).

    Example:
        >>> s = StsSet("en", ("a", "b"), ("b", "a"), (1.0, 2.0), "en.dev.tsv")
        >>> calls = []
        >>> vecs = embed_sts({"en": s}, lambda t: calls.append(t) or np.eye(2)[: len(t)])
        >>> calls, vecs["en"][1].tolist()
        ([['a', 'b']], [[0.0, 1.0], [1.0, 0.0]])
    """
    index: dict[str, int] = {}
    for s in sets.values():
        for sentence in (*s.sentence1, *s.sentence2):
            index.setdefault(sentence, len(index))
    vectors = np.asarray(encode(list(index)))  # (distinct, d)
    if vectors.ndim != 2 or len(vectors) != len(index):
        raise ValueError(
            f"the model returned vectors of shape {vectors.shape} for {len(index)} sentences"
        )
    return {
        lang: (
            vectors[[index[t] for t in s.sentence1]],  # (n, d)
            vectors[[index[t] for t in s.sentence2]],  # (n, d)
        )
        for lang, s in sets.items()
    }


def sts_scores(
    sets: Mapping[str, StsSet],
    vectors: Mapping[str, tuple[np.ndarray, np.ndarray]],
    teacher_vectors: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, dict[str, float]]:
    """Per-language ``{"mono", "cross"}`` of one model from its and the teacher's vectors.

    Args:
        sets: language -> scored pairs, English included.
        vectors: the model's :func:`embed_sts` output.
        teacher_vectors: the teacher's; its English sentence1 vectors are the cross side.

    Returns:
        language -> ``{"mono": ..., "cross": ...}`` (Spearman x 100), plus ``"mean"`` over the
        languages other than English. ``"cross"`` is absent when the dimensions differ.

    Example:
        >>> s = {k: StsSet(k, ("a", "b"), ("a", "c"), (5.0, 1.0), "") for k in ("en", "de")}
        >>> v = embed_sts(s, lambda t: np.eye(3)[: len(t)])
        >>> sts_scores(s, v, v)["mean"]
        {'mono': 100.0, 'cross': 100.0}
    """
    teacher_en = teacher_vectors["en"][0]  # (n, d_teacher)
    out: dict[str, dict[str, float]] = {}
    for lang, s in sets.items():
        emb1, emb2 = vectors[lang]
        row = {"mono": sts_spearman_x100(emb1, emb2, s.scores)}
        if emb2.shape == teacher_en.shape:
            row["cross"] = sts_spearman_x100(teacher_en, emb2, s.scores)
        out[lang] = row
    others = [row for lang, row in out.items() if lang != "en"]
    out["mean"] = {
        key: round(float(np.mean([row[key] for row in others])), 2)
        for key in ("mono", "cross")
        if others and all(key in row for row in others)
    }
    return out


def sts_report(
    sets: Mapping[str, StsSet], teacher_encode: Encode, models: Mapping[str, Encode]
) -> dict:
    """The STS report of the teacher and each model (layout: this module's docstring).

    Args:
        sets: :func:`read_sts` output (English required).
        teacher_encode: the English teacher, ``list[str] -> np.ndarray (n, d)``.
        models: name -> encode of each model compared, e.g. ``{"student_untrained": ...,
            "student_distilled": ...}``; each is called once.

    Example:
        >>> s = {k: StsSet(k, ("a", "b"), ("a", "c"), (5.0, 1.0), "") for k in ("en", "de")}
        >>> enc = lambda t: np.eye(3)[: len(t)]
        >>> sts_report(s, enc, {"model": enc})["model"]["de"]
        {'mono': 100.0, 'cross': 100.0}
    """
    if "en" not in sets:
        raise ValueError("STS needs the English set: it is the reference and the cross side")
    teacher = embed_sts(sets, teacher_encode)
    report: dict = {"pairs": len(sets["en"]), "langs": list(sets)}
    report["teacher"] = sts_scores(sets, teacher, teacher)
    for name, encode in models.items():
        report[name] = sts_scores(sets, embed_sts(sets, encode), teacher)
    return report


def cached_encode(encode: Encode) -> Encode:
    """Wrap ``encode`` so that a sentence seen before is not embedded again.

    Lets several :func:`sts_report` calls (one per model, as the CLI loads them one at a time)
    share one teacher without embedding its sentences twice.

    Example:
        >>> calls = []
        >>> enc = cached_encode(lambda t: calls.append(list(t)) or np.ones((len(t), 2)))
        >>> _ = enc(["a", "b"]); _ = enc(["b", "c"])
        >>> calls
        [['a', 'b'], ['c']]
    """
    memo: dict[str, np.ndarray] = {}

    def wrapped(texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in memo))
        if missing:
            memo.update(zip(missing, np.asarray(encode(missing)), strict=True))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([memo[t] for t in texts])

    return wrapped


STS_LABELS = {
    "teacher": "teacher on x",
    "student_untrained": "untrained student",
    "student_distilled": "distilled student",
    "model": "model",
}


def format_sts_table(report: dict, labels: Mapping[str, str] | None = None) -> str:
    """A plain-text table of :func:`sts_report`: one row per (model, setting), languages as
    columns, then the mean over the languages other than English.

    The first row is the teacher on English, the reference every language should reach.

    Example:
        >>> s = {k: StsSet(k, ("a", "b"), ("a", "c"), (5.0, 1.0), "") for k in ("en", "de")}
        >>> enc = lambda t: np.eye(3)[: len(t)]
        >>> print(format_sts_table(sts_report(s, enc, {})).splitlines()[2])
        teacher (English reference) mono     100.0       -       -
    """
    names = {**STS_LABELS, **(labels or {})}
    langs = list(report["langs"])
    columns = [*langs, "mean"]
    header = f"{'Spearman x 100':<28}{'':<6}" + "".join(f"{c:>8}" for c in columns)
    lines = [header, "-" * len(header)]

    def cells(values: dict, setting: str, keep: set[str]) -> str:
        out = ""
        for col in columns:
            v = values.get(col, {}).get(setting) if col in keep else None
            out += f"{v:>8.1f}" if v is not None else f"{'-':>8}"
        return out

    teacher = report["teacher"]
    lines.append(f"{'teacher (English reference)':<28}{'mono':<6}" + cells(teacher, "mono", {"en"}))
    models = [k for k in report if k not in ("pairs", "langs")]
    for name in models:
        keep = set(columns) - {"en"} if name == "teacher" else set(columns)
        for setting in ("mono", "cross"):
            label = names.get(name, name) if setting == "mono" else ""
            lines.append(f"{label:<28}{setting:<6}" + cells(report[name], setting, keep))
    return "\n".join(lines)
