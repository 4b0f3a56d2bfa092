"""The Analyse tab: which pairs each model gets wrong, and whether it prefers its own language.

Two analyses of held-out pairs, on the same sentences and the same vectors (each model encodes
them once):

- the error inspector (:mod:`kd.evaluate.errors`): per language, each model's retrieval accuracy;
  pick a language to read its wrong pairs, what each model ranked instead, and the pairs
  distillation fixed and broke (untrained student vs the visitor's distilled one, or the
  pre-built one when the visitor has none);
- language bias (:mod:`kd.evaluate.bias`): every translation against one pool mixing all
  languages, each model in its own space, as stacked bars with the per-language accuracy beside.

The handlers are plain functions (tests call them without a browser); the cost cap is
``settings.ANALYSE_MAX_PAIRS`` pairs and ``settings.ANALYSE_MAX_CHARS`` characters a click.
"""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from kd.evaluate.bias import bias_texts, language_bias, split_bias_vectors
from kd.evaluate.errors import retrieval_errors
from kd.langs import parse_langs
from webapp import settings
from webapp.aligned import source_pairs
from webapp.model_cache import model_vectors
from webapp.session import Visitor, markdown_literal, user_error
from webapp.settings import MAX_LANGS, MODEL_LABELS, SOURCES

SPACE_CHOICES = [
    ("cross: translations by each model, English by the teacher (the headline)", "cross"),
    ("own: both sides by each model", "own"),
]
ERRORS_SHOWN = 8  # wrong pairs listed per model and language (the counts are complete)
TOP_SHOWN = 5


def limits_note() -> str:
    """The Analyse tab's cost cap in words, for the form."""
    return (
        f"at most {settings.ANALYSE_MAX_PAIRS:,} pairs in all languages together, "
        f"{settings.ANALYSE_MAX_CHARS:,} characters"
    )


def pair_sets(
    source: str, tatoeba_dir: str | None, upload: str | None, langs_text: str, per_lang
) -> dict[str, tuple[list[str], list[str]]]:
    """language -> (English sentences, translations): the first ``per_lang`` pairs of each.

    Raises:
        ValueError: an unknown language, a missing or malformed source, a language the source
            lacks, more pairs or characters than the cost cap.
    """
    langs = [lang for lang in parse_langs(langs_text or "") if lang != "en"]
    if not langs:
        raise ValueError("pick at least one language besides English, e.g. de,fr,ja")
    if len(langs) > MAX_LANGS:
        raise ValueError(f"{len(langs)} languages; pick at most {MAX_LANGS}")
    per_lang = int(per_lang or 0)
    if per_lang < 2:
        raise ValueError("'pairs per language' must be at least 2 (retrieval needs a choice)")
    pairs = source_pairs(source, tatoeba_dir, upload, langs)
    sets: dict[str, tuple[list[str], list[str]]] = {}
    for p in pairs:
        en, x = sets.setdefault(p.lang, ([], []))
        if p.lang in langs and p.other is not None and len(en) < per_lang:
            en.append(p.en)
            x.append(p.other)
    sets = {lang: sets[lang] for lang in langs if len(sets.get(lang, ([], []))[0]) >= 2}
    if not sets:
        raise ValueError(
            f"no language among {', '.join(langs)} has 2 pairs or more in that source; pick "
            "another language or source"
        )
    total = sum(len(en) for en, _ in sets.values())
    if total > settings.ANALYSE_MAX_PAIRS:
        raise ValueError(
            f"that is {total:,} pairs; one analysis takes at most {settings.ANALYSE_MAX_PAIRS:,}: "
            "lower 'pairs per language' or pick fewer languages"
        )
    chars = sum(len(s) for en, x in sets.values() for s in (*en, *x))
    if chars > settings.ANALYSE_MAX_CHARS:
        raise ValueError(
            f"those pairs hold {chars:,} characters; one analysis encodes at most "
            f"{settings.ANALYSE_MAX_CHARS:,}: lower 'pairs per language' or pick fewer languages"
        )
    return sets


def analyse(
    source: str,
    tatoeba_dir: str | None,
    upload: str | None,
    langs_text: str,
    per_lang,
    space: str,
    teacher: str,
    student: str,
    visitor: Visitor | None,
):
    """Both analyses of one set of held-out pairs.

    Returns:
        (Markdown summary, DataFrame of retrieval accuracy per language and model, the
        language dropdown's update, the errors of every language (JSON-ready, for
        :func:`show_errors`), Markdown of the first language's errors, the bias figure,
        DataFrame of the bias numbers).

    Raises:
        gr.Error: bad languages, a missing or malformed source, too many pairs, a bad model.
    """
    from viz.figures import language_bias_bars

    try:
        if space not in ("cross", "own"):
            raise ValueError(f"unknown retrieval space {space!r}; pick cross or own")
        sets = pair_sets(source, tatoeba_dir, upload, langs_text, per_lang)
        if source == SOURCES[2] and visitor is not None and str(upload) not in visitor.uploads:
            visitor.uploads.append(str(upload))  # deleted with the visitor's other files
        started = time.perf_counter()
        vectors = {
            label: split_bias_vectors(v, sets)
            for label, v in model_vectors(bias_texts(sets), teacher, student, visitor).items()
        }
        seconds = time.perf_counter() - started
        errors = _errors(sets, vectors, space)
        bias = {label: language_bias(sets, v) for label, v in vectors.items()}
        first = next(iter(errors))
        langs = list(errors)
        n_pairs = sum(len(en) for en, _ in sets.values())
        summary = (
            f"**{n_pairs:,} held-out pairs** in {len(sets)} languages, {len(vectors)} models "
            f"(encoded in {seconds:.1f} s). Retrieval ({space} space): each translation ranks "
            "its language's English sentences. Pick a language (or click its row) for its "
            f"wrong pairs. Language bias: each translation against one pool of "
            f"{next(iter(bias.values()))['pool']:,} sentences mixing every language, each model "
            "embedding all of them."
        )
        return (
            summary,
            accuracy_table(errors),
            gr.update(choices=langs, value=first),
            errors,
            errors_markdown(errors, first),
            language_bias_bars(bias_frame(bias), title="nearest neighbour in one mixed pool"),
            bias_table(bias),
        )
    except ValueError as err:
        raise user_error(str(err)) from None


def _errors(sets: dict, vectors: dict, space: str) -> dict[str, dict]:
    """language -> :func:`kd.evaluate.errors.retrieval_errors` over every model."""
    teacher = MODEL_LABELS["teacher"]
    after = next(
        (MODEL_LABELS[k] for k in ("distilled", "prebuilt") if MODEL_LABELS[k] in vectors), None
    )
    before = MODEL_LABELS["untrained"] if MODEL_LABELS["untrained"] in vectors else None
    out = {}
    for lang, (en, x) in sets.items():
        teacher_en = vectors[teacher][lang][0] if teacher in vectors else None
        pairs = {}
        for label, by_lang in vectors.items():
            en_v, x_v = by_lang[lang]
            if space == "cross" and teacher_en is not None and teacher_en.shape == en_v.shape:
                en_v = teacher_en
            pairs[label] = (x_v, en_v)
        out[lang] = retrieval_errors(
            en, x, pairs, k=TOP_SHOWN, limit=ERRORS_SHOWN, before=before, after=after
        )
    return out


def accuracy_table(errors: dict[str, dict]) -> pd.DataFrame:
    """One row per language, one column per model: the retrieval accuracy errors were read from."""
    rows = []
    for lang, result in errors.items():
        row = {"lang": lang, "pairs": result["pairs"]}
        row.update({name: m["accuracy"] for name, m in result["models"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _quote(text: str) -> str:
    return markdown_literal(text)


def _entry_lines(entry: dict) -> list[str]:
    ranked = " · ".join(f"{hit['score']:.2f} {_quote(hit['english'])}" for hit in entry["top"])
    return [
        f"- *{_quote(entry['sentence'])}*  ",
        f"  right: {_quote(entry['english'])} ({entry['gold_score']:.2f}, rank "
        f"{entry['gold_rank']})  ",
        f"  ranked first: {ranked}",
    ]


def errors_markdown(errors: dict[str, dict] | None, lang: str | None) -> str:
    """One language's wrong pairs per model, then the pairs distillation fixed and broke."""
    if not errors or lang not in errors:
        return "Press *Analyse*, then pick a language."
    result = errors[lang]
    lines = [f"### {lang}: {result['pairs']} pairs"]
    for name, m in result["models"].items():
        shown = f"; the {len(m['errors'])} most confident mistakes:" if m["errors"] else "."
        lines += [
            "",
            f"**{name}**: {m['right']} of {result['pairs']} right ({m['accuracy']:.1%}), "
            f"{m['wrong']} wrong{shown}",
        ]
        for entry in m["errors"]:
            lines += _entry_lines(entry)
    for key, what in (("fixed", "fixed by distillation"), ("broken", "broken by distillation")):
        if key not in result:
            continue
        part = result[key]
        change = "wrong → right" if key == "fixed" else "right → wrong"
        lines += [
            "",
            f"#### {part['count']} pairs {what} ({part['before']} → {part['after']}: {change})",
        ]
        for pair in part["pairs"]:
            b, a = pair["before"], pair["after"]
            lines += [
                f"- *{_quote(b['sentence'])}*, right: {_quote(b['english'])}  ",
                f"  {part['before']}: rank {b['gold_rank']}, first "
                f"{_quote(b['top'][0]['english'])} ({b['top'][0]['score']:.2f})  ",
                f"  {part['after']}: rank {a['gold_rank']}, first "
                f"{_quote(a['top'][0]['english'])} ({a['top'][0]['score']:.2f})",
            ]
    return "\n".join(lines)


def show_errors(errors: dict[str, dict] | None, lang: str | None) -> str:
    """The language dropdown's handler: that language's errors (from the last Analyse)."""
    return errors_markdown(errors, lang)


def pick_row(errors: dict[str, dict] | None, evt: gr.SelectData):
    """A click on the accuracy table: its row's language goes to the dropdown (read from the
    row itself, so a table the visitor sorted still gives the right language)."""
    langs = list(errors or {})
    row = evt.row_value[0] if evt.row_value else None
    if row not in langs and isinstance(evt.index, list | tuple) and evt.index:
        index = evt.index[0]
        row = langs[index] if isinstance(index, int) and 0 <= index < len(langs) else None
    return gr.update(value=row) if row in langs else gr.update()


def _bias_rows(bias: dict[str, dict]):
    """(model, language, entry) of every language and then the mean, model by model."""
    for model, result in bias.items():
        for lang, entry in [*result["per_lang"].items(), ("mean", result["mean"])]:
            yield model, lang, entry


def bias_frame(bias: dict[str, dict]) -> pd.DataFrame:
    """Long form for :func:`viz.figures.language_bias_bars`: one row per (model, language)."""
    return pd.DataFrame(
        {
            "model": model,
            "lang": lang,
            "translation": e["translation_share"],
            "own_language": e["own_language_share"],
            "other": e["other_share"],
            "per_language_accuracy": e["per_language_accuracy"],
        }
        for model, lang, e in _bias_rows(bias)
    )


def bias_table(bias: dict[str, dict]) -> pd.DataFrame:
    """The bias numbers, rounded: one row per (model, language), the mean last."""
    return pd.DataFrame(
        {
            "model": model,
            "lang": lang,
            "per-language accuracy": round(e["per_language_accuracy"], 3),
            "mixed-pool accuracy": round(e["mixed_accuracy"], 3),
            "drop": round(e["drop"], 3),
            "nearest: own language": round(e["own_language_share"], 3),
            "nearest: other": round(e["other_share"], 3),
        }
        for model, lang, e in _bias_rows(bias)
    )
