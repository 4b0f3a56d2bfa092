"""One report on a student: one self-contained HTML page and its JSON (``kd report``).

The page holds, per language and as a mean, with the teacher and the untrained student as
baselines (and a second student with ``--against``):

- retrieval into the teacher's space (the student's translations find the teacher's English
  vector) and within the student (both sides embedded by the student);
- STS within a language and across languages (:mod:`kd.evaluate.sts`);
- English fidelity (cosine of student(en) with teacher(en)) and MSE;
- the collapse measure (the mean cosine of unrelated sentences, with the alarm of
  :mod:`kd.evaluate.collapse`) and each measure's verdict against the untrained student;
- language bias (:mod:`kd.evaluate.bias`: the same translations against one pool mixing every
  language) and the mining error (:func:`kd.evaluate.mining.held_out_xsim`: best English
  sentence by margin among every language's), from the vectors the retrieval already made.

The page is a list of sections (:data:`SECTIONS`), each a small function from the results
dict to a :class:`Section` (its JSON part and its HTML part), so a new analysis is one function
appended. Figures are inline SVG drawn here, the CSS is inline: the page opens offline, from a
file, with no script and no link out.

The results dict (``build_results``; JSON-ready)::

    {
        "schema": 1,
        "models": {"teacher": id, "student_untrained": id, "model": id, "against": id},
        "pairs": {"source": "...", "n": {lang: pairs}, "results": {model key: {lang: {...}}}},
        "sts": {...} or None,             # kd.evaluate.sts.sts_report, same model keys
        "bias": {model key: {...}},       # kd.evaluate.bias.language_bias (absent from a run's
        "mining": {model key: {...}},     # metrics); kd.evaluate.mining.held_out_xsim
        "seconds": 12.3,                  # wall time of the measurements
    }

No torch here: models come in as ``list[str] -> np.ndarray`` functions.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd.evaluate.bias import encode_bias_vectors, language_bias
from kd.evaluate.collapse import (
    COLLAPSE_FRACTION,
    MEASURES,
    TOLERANCE,
    collapse_check,
    reference_values,
    verdicts,
)
from kd.evaluate.metrics import evaluate
from kd.evaluate.mining import held_out_xsim
from kd.evaluate.sts import cached_encode, sts_report
from kd.io import atomic_write_bytes, atomic_write_json

Encode = Callable[[list[str]], np.ndarray]
SCHEMA = 1

LABELS = {
    "teacher": "teacher",
    "student_untrained": "untrained student",
    "model": "student",
    "against": "other student",
}
COLOURS = {
    "teacher": "#7f7f7f",
    "student_untrained": "#c9a227",
    "model": "#1f77b4",
    "against": "#d62728",
}


# ---- measuring -----------------------------------------------------------------------------------
def build_results(
    sets: Mapping[str, tuple[list[str], list[str]]],
    sts_sets: Mapping,
    teacher: Encode,
    models: Mapping[str, Callable[[], Encode]],
    ids: Mapping[str, str],
    source: str,
) -> dict:
    """Measure the teacher and each model on the held-out pairs and STS sets.

    Args:
        sets: language -> (English sentences, translations), row-aligned (Tatoeba).
        sts_sets: :func:`kd.evaluate.sts.read_sts` output, or empty.
        teacher: the teacher's encode.
        models: key (``student_untrained``, ``model``, ``against``) -> a function that loads
            the model and returns its encode; called one at a time, so one model is held at once.
        ids: key -> the model's name, ``teacher`` included.
        source: what the pairs are, for the page (``Tatoeba dev, 500 pairs a language``).
    """
    if not sets:
        raise ValueError("the report needs held-out pairs (--tatoeba DIR with some language)")
    started = time.perf_counter()
    teacher = cached_encode(teacher)  # each sentence embedded once for every measure
    teacher_en = {lang: teacher(list(en)) for lang, (en, _x) in sets.items()}
    results = {"teacher": evaluate(sets, teacher_en, teacher)}
    sts = sts_report(sts_sets, teacher, {}) if sts_sets else None
    own = {"teacher": encode_bias_vectors(sets, teacher)}  # both sides by the model itself
    for key, load in models.items():
        encode = cached_encode(load())
        results[key] = evaluate(sets, teacher_en, encode)
        own[key] = encode_bias_vectors(sets, encode)
        if sts is not None:
            sts.update(sts_report(sts_sets, teacher, {key: encode}))
        del encode
    bias = {key: language_bias(sets, vectors) for key, vectors in own.items()}
    mining = {key: held_out_xsim(sets, vectors) for key, vectors in own.items()}
    return {
        "schema": SCHEMA,
        "models": dict(ids),
        "pairs": {
            "source": source,
            "n": {lang: len(en) for lang, (en, _x) in sets.items()},
            "results": results,
        },
        "sts": sts,
        "bias": bias,
        "mining": mining,
        "seconds": round(time.perf_counter() - started, 1),
    }


def results_from_run(metrics: dict, model_id: str, source: str) -> dict:
    """The report's results from a finished run's ``metrics.json``: its held-out pairs and STS
    as the run measured them (no model runs again)."""
    keys = {"teacher": "teacher", "student_untrained": "student_untrained"}
    keys["student_distilled"] = "model"
    config = metrics.get("config", {})
    results = {new: metrics[old] for old, new in keys.items() if old in metrics}
    if "model" not in results:
        raise ValueError("this run has no evaluation of its distilled student to report")
    sts = metrics.get("sts")
    if sts:
        sts = {keys.get(k, k): v for k, v in sts.items()}
    n = metrics.get("config", {}).get("eval_pairs")
    langs = [lang for lang in results["model"] if lang != "mean"]
    return {
        "schema": SCHEMA,
        "models": {
            "teacher": config.get("teacher", "?"),
            "student_untrained": config.get("student", "?"),
            "model": model_id,
        },
        "pairs": {"source": source, "n": dict.fromkeys(langs, n), "results": results},
        "sts": sts or None,
        "seconds": None,
    }


# ---- sections ------------------------------------------------------------------------------------
@dataclass
class Section:
    """One part of the report: its key in the JSON, a title, the numbers it shows, its HTML."""

    key: str
    title: str
    data: dict
    html: str


def _view(results: dict) -> dict:
    """The per-model metrics in the layout :mod:`kd.evaluate.collapse` reads."""
    return {**results["pairs"]["results"], "sts": results.get("sts") or {}}


def _present(results: dict) -> list[str]:
    return [k for k in LABELS if k in results["pairs"]["results"]]


def _langs(results: dict) -> list[str]:
    first = results["pairs"]["results"][_present(results)[0]]
    return [lang for lang in first if lang != "mean"]


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]], first_col_left: bool = True) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="num"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def svg_bars(
    groups: list[str],
    series: Mapping[str, list[float | None]],
    *,
    lo: float = 0.0,
    hi: float = 1.0,
    digits: int = 2,
    marks: Mapping[str, float] | None = None,
) -> str:
    """Grouped horizontal bars as inline SVG: one group per row label, one bar per series
    (colour: :data:`COLOURS`), the value written at the bar's end; ``marks`` draws labelled
    vertical lines (a threshold).

    Example:
        >>> svg_bars(["de"], {"model": [0.5]}).startswith("<svg")
        True
    """
    names = list(series)
    bar, gap, left, width = 11, 8, 54, 520
    group_h = bar * len(names) + gap
    top = 22 if marks else 6
    height = top + group_h * len(groups) + 30
    span = (hi - lo) or 1.0

    def x(v: float) -> float:
        return left + width * (min(max(v, lo), hi) - lo) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" height="{height}" '
        f'role="img" font-family="sans-serif" font-size="11">'
    ]
    for tick in np.linspace(lo, hi, 5):
        tx = x(float(tick))
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top - 2}" x2="{tx:.1f}" y2="{height - 24}" '
            'stroke="#ddd"/>'
            f'<text x="{tx:.1f}" y="{height - 12}" text-anchor="middle">{tick:g}</text>'
        )
    for g, label in enumerate(groups):
        y0 = top + g * group_h
        parts.append(
            f'<text x="{left - 6}" y="{y0 + group_h / 2 + 2:.1f}" text-anchor="end">'
            f"{_e(label)}</text>"
        )
        for i, name in enumerate(names):
            value = series[name][g]
            if value is None:
                continue
            y = y0 + i * bar
            parts.append(
                f'<rect x="{left}" y="{y}" width="{max(x(value) - left, 0.5):.1f}" '
                f'height="{bar - 2}" fill="{COLOURS.get(name, "#444")}">'
                f"<title>{_e(LABELS.get(name, name))} {label}: {value:.{digits}f}</title></rect>"
                f'<text x="{x(value) + 3:.1f}" y="{y + bar - 3}" font-size="9">'
                f"{value:.{digits}f}</text>"
            )
    for text, value in (marks or {}).items():
        mx = x(value)
        parts.append(
            f'<line x1="{mx:.1f}" y1="{top - 4}" x2="{mx:.1f}" y2="{height - 24}" '
            'stroke="#d62728" stroke-dasharray="4 3"/>'
            f'<text x="{mx:.1f}" y="{top - 8}" text-anchor="middle" fill="#d62728">'
            f"{_e(text)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend(keys: list[str], ids: Mapping[str, str]) -> str:
    items = "".join(
        f'<span class="key"><i style="background:{COLOURS[k]}"></i>{_e(LABELS[k])}: '
        f"<code>{_e(ids.get(k, '?'))}</code></span>"
        for k in keys
    )
    return f'<p class="legend">{items}</p>'


def _per_lang_figure(results: dict, metric: str, lo=0.0, hi=1.0, digits=2, marks=None) -> tuple:
    """(data, SVG) of one held-out metric per language and mean, every model present."""
    keys = [k for k in _present(results) if metric in results["pairs"]["results"][k]["mean"]]
    rows = [*_langs(results), "mean"]
    data = {
        k: {lang: results["pairs"]["results"][k].get(lang, {}).get(metric) for lang in rows}
        for k in keys
    }
    series = {k: [data[k][lang] for lang in rows] for k in keys}
    return data, svg_bars(rows, series, lo=lo, hi=hi, digits=digits, marks=marks)


def overview_section(results: dict) -> Section:
    """The means of every measure, each model, and the verdicts against the untrained student."""
    view = _view(results)
    present = _present(results)
    from kd.evaluate.collapse import summary_values

    values = {k: summary_values(view, k) for k in present}
    found = {k: verdicts(view, k) for k in ("model", "against") if k in present}
    rows = []
    for m, (label, higher) in MEASURES.items():
        if not any(m in values[k] for k in present):
            continue
        tol, kind = TOLERANCE[m]
        cells = [f"{_e(label)} <small>({'higher' if higher else 'lower'} is better)</small>"]
        cells += [_fmt(values[k].get(m), 2 if m.startswith("sts") else 3) for k in present]
        for k in found:
            v = found[k].get(m, {}).get("verdict")
            cells.append(f'<span class="v-{v}">{v}</span>' if v else "–")
        cells.append(f"±{tol:g}" + (" × untrained" if kind == "rel" else ""))
        rows.append(cells)
    header = ["measure (mean over languages)", *(LABELS[k] for k in present)]
    header += [f"{LABELS[k]} vs untrained" for k in found] + ["same within"]
    worse = {
        k: [MEASURES[m][0] for m, v in f.items() if v["verdict"] == "worse"]
        for k, f in found.items()
    }
    alerts = "".join(
        f'<p class="alert">The {_e(LABELS[k])} is <b>worse than the untrained student</b> on: '
        f"{_e(', '.join(w))}.</p>"
        for k, w in worse.items()
        if w
    )
    n = results["pairs"]["n"]
    body = (
        _legend(present, results["models"])
        + f"<p>Held-out pairs: {_e(results['pairs']['source'])} ({len(n)} languages). "
        "A verdict is <i>same</i> when the difference is within the tolerance in the last "
        "column.</p>" + alerts + _table(header, rows)
    )
    return Section("overview", "Overview and verdicts", {"means": values, "verdicts": found}, body)


def retrieval_section(results: dict) -> Section:
    """Retrieval into the teacher's space and within the student, per language."""
    cross, cross_svg = _per_lang_figure(results, "cross_mean_accuracy")
    own, own_svg = _per_lang_figure(results, "student_mean_accuracy")
    body = (
        "<h3>Into the teacher's space (cross-model)</h3><p>Each translation, embedded by the "
        "model, looks for its English sentence among all the held-out English sentences "
        "embedded by the <i>teacher</i> (and back; top-1 accuracy, the mean of both "
        "directions). High only when the model's vectors land where the teacher put the "
        "English sentence: the point of distillation. The untrained student lives in "
        "another space, so it scores near chance here; the teacher scores how far an "
        "English-only model gets on foreign text.</p>"
        + cross_svg
        + "<h3>Within the model</h3><p>Both sides embedded by the same model: does it still "
        "pair translations? The untrained multilingual student is already good at this; "
        "distillation must not damage it.</p>" + own_svg
    )
    return Section("retrieval", "Retrieval", {"cross": cross, "within": own}, body)


def sts_section(results: dict) -> Section | None:
    """STS within each language and across (English by the teacher, x by the model)."""
    sts = results.get("sts")
    if not sts:
        return None
    langs = [lang for lang in sts["langs"] if lang != "en"]
    rows = [*langs, "mean"]
    keys = [k for k in LABELS if k in sts]
    data: dict = {}
    figures = ""
    for setting, words in (
        ("mono", "both sentences in language x, embedded by the model"),
        ("cross", "sentence 1 in English embedded by the teacher, sentence 2 in x by the model"),
    ):
        series = {k: [sts[k].get(lang, {}).get(setting) for lang in rows] for k in keys}
        series = {k: v for k, v in series.items() if any(x is not None for x in v)}
        data[setting] = {k: dict(zip(rows, v, strict=True)) for k, v in series.items()}
        ref = sts["teacher"].get("en", {}).get("mono")
        marks = {f"teacher on English {ref:.1f}": ref} if ref is not None else None
        figures += f"<h3>{setting}: {_e(words)}</h3>" + svg_bars(
            rows, series, lo=-20, hi=100, digits=1, marks=marks
        )
    body = (
        f"<p>Spearman × 100 between the cosine of two sentences and the human score (0-5), "
        f"{sts['pairs']} pairs a language. The dashed line is the teacher on English, the "
        "reference every language should reach.</p>" + figures
    )
    return Section("sts", "Semantic similarity (STS)", data, body)


def fidelity_section(results: dict) -> Section | None:
    """English fidelity (student(en) vs teacher(en)) and MSE per language."""
    fid, fid_svg = _per_lang_figure(results, "english_fidelity", lo=-0.2, hi=1.0)
    if not fid:
        return None
    mse, _ = _per_lang_figure(results, "mse_x100")
    keys = list(mse)
    rows = [
        [_e(lang), *(_fmt(mse[k][lang], 3) for k in keys)] for lang in [*_langs(results), "mean"]
    ]
    body = (
        "<p>English fidelity: the mean cosine between the model's and the teacher's vector of "
        "the same English sentence (1: the teacher's own). The teacher scores 1 by "
        "definition.</p>"
        + fid_svg
        + "<h3>MSE × 100</h3><p>Mean squared error between teacher(English) and "
        "model(translation), per element, × 100 (lower is better).</p>"
        + _table(["language", *(LABELS[k] for k in keys)], rows)
    )
    return Section(
        "fidelity", "English fidelity and MSE", {"english_fidelity": fid, "mse_x100": mse}, body
    )


def collapse_section(results: dict) -> Section:
    """The mean cosine of unrelated sentences per model, against the collapse alarm."""
    view = _view(results)
    refs = reference_values(view)
    checks = {
        k: collapse_check(view[k]["mean"].get("unrelated_cosine"), refs)
        for k in _present(results)
        if k not in ("teacher", "student_untrained")
    }
    threshold = next((c["threshold"] for c in checks.values()), None)
    data, svg = _per_lang_figure(
        results,
        "unrelated_cosine",
        lo=-0.2,
        hi=1.0,
        marks={f"alarm {threshold:.2f}": threshold} if threshold is not None else None,
    )
    alerts = "".join(
        f'<p class="alert">The {_e(LABELS[k])} is <b>collapsing</b>: unrelated sentences have '
        f"mean cosine {c['unrelated_cosine']:.3f}, above the alarm at {c['threshold']:.3f}.</p>"
        for k, c in checks.items()
        if c["alarm"]
    )
    body = (
        "<p>The mean cosine of each held-out English sentence with every other one, embedded "
        "by the model. A space collapsing toward one point drives it to 1 while its loss can "
        f"still look fine. The alarm rings when a model's spread (1 − this cosine) falls below "
        f"{COLLAPSE_FRACTION:g} of the smaller spread of the teacher and the untrained student "
        "(multilingual-e5 keeps unrelated sentences at a high cosine: the alarm is relative "
        "to it).</p>" + alerts + svg
    )
    data = {"by_language": data, "references": refs, "threshold": threshold, "checks": checks}
    return Section("collapse", "Collapse", data, body)


def per_language_section(results: dict) -> Section:
    """Every held-out number, one row per (language, model)."""
    metrics = [
        ("cross_mean_accuracy", "into teacher"),
        ("student_mean_accuracy", "within"),
        ("english_fidelity", "fidelity"),
        ("mse_x100", "MSE×100"),
        ("unrelated_cosine", "unrelated cos"),
    ]
    sts = results.get("sts") or {}
    rows, data = [], {}
    for lang in [*_langs(results), "mean"]:
        for k in _present(results):
            values = dict(results["pairs"]["results"][k].get(lang, {}))
            for setting in ("mono", "cross"):
                v = sts.get(k, {}).get(lang, {}).get(setting)
                if v is not None:
                    values[f"sts_{setting}"] = v
            data.setdefault(lang, {})[k] = values
            cells = [_e(lang), _e(LABELS[k])]
            cells += [_fmt(values.get(m)) for m, _ in metrics]
            cells += [_fmt(values.get(f"sts_{s}"), 1) for s in ("mono", "cross")]
            rows.append(cells)
    header = ["language", "model", *(h for _, h in metrics), "STS mono", "STS cross"]
    pairs = ", ".join(f"{lang} {n}" for lang, n in results["pairs"]["n"].items())
    body = f"<p>Pairs per language: {_e(pairs)}.</p>" + _table(header, rows)
    return Section("per_language", "Every number, per language", data, body)


def _by_model(results: dict, part: str, metric: str) -> dict[str, dict[str, float]]:
    """model key -> {language and "mean": ``metric``} from the ``bias`` or ``mining`` part."""
    found = results.get(part) or {}
    rows = [*_langs(results), "mean"]
    return {
        k: {
            lang: (found[k]["mean"] if lang == "mean" else found[k]["per_lang"].get(lang, {})).get(
                metric
            )
            for lang in rows
        }
        for k in LABELS
        if k in found
    }


def bias_section(results: dict) -> Section | None:
    """Language bias: retrieval in one pool mixing every language against each language's own."""
    if not results.get("bias"):
        return None  # a report made from a run's metrics.json
    rows = [*_langs(results), "mean"]
    drop = _by_model(results, "bias", "drop")
    own = _by_model(results, "bias", "own_language_share")
    mixed = _by_model(results, "bias", "mixed_accuracy")
    table = [
        [_e(lang), _e(LABELS[k]), _fmt(mixed[k][lang]), _fmt(own[k][lang]), _fmt(drop[k][lang])]
        for lang in rows
        for k in drop
    ]
    pool = next(iter(results["bias"].values()))["pool"]
    body = (
        "<p>Each translation, embedded by the model, looks for its English sentence in one pool "
        f"of {pool:,} sentences mixing every language and English (both sides by the model "
        "itself; the paper's test of language bias). <i>Drop</i>: accuracy in the language's "
        "own pool minus accuracy in the mixed pool. A model that ranks by language before "
        "meaning finds other sentences of the query's own language first (the "
        "<i>own language</i> share).</p>"
        + svg_bars(rows, {k: [drop[k][lang] for lang in rows] for k in drop}, lo=0.0, hi=1.0)
        + _table(["language", "model", "mixed pool", "own language", "drop"], table)
    )
    data = {"drop": drop, "own_language_share": own, "mixed_accuracy": mixed}
    return Section("bias", "Language bias", data, body)


def mining_section(results: dict) -> Section | None:
    """The xSIM-style mining error on the held-out pairs."""
    if not results.get("mining"):
        return None
    rows = [*_langs(results), "mean"]
    error = _by_model(results, "mining", "xsim_error")
    first = next(iter(results["mining"].values()))
    body = (
        "<p>Bitext mining as LASER's xSIM scores it: each translation's best English sentence "
        f"by ratio margin (k = {first['k']}) among all {first['pool']:,} held-out English "
        "sentences of every language, both sides embedded by the model; the share it gets "
        "wrong (lower is better). <code>kd mine</code> mines two files this way; "
        "<code>bench/mining.py</code> measures precision, recall and F1 with planted pairs "
        "among distractors.</p>"
        + svg_bars(rows, {k: [error[k][lang] for lang in rows] for k in error}, lo=0.0, hi=1.0)
    )
    return Section("mining", "Mining error (xSIM)", {"xsim_error": error}, body)


SECTIONS: list[Callable[[dict], Section | None]] = [
    overview_section,
    retrieval_section,
    sts_section,
    fidelity_section,
    bias_section,
    mining_section,
    collapse_section,
    per_language_section,
]
"""The report's parts in page order; a function returning None leaves its part out (STS when
no --sts was given; bias and mining for a page made from a run's metrics.json)."""


# ---- the page ------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1em;margin-bottom:.3em}
table.num{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.num td,table.num th{border:1px solid #ddd;padding:.2em .5em;text-align:right}
table.num td:first-child,table.num th:first-child{text-align:left}
.legend .key{margin-right:1.2em;white-space:nowrap}
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.alert{background:#fdecea;border-left:4px solid #d62728;padding:.5em .8em}
.v-better{color:#1a7f37;font-weight:600}.v-worse{color:#d62728;font-weight:700}
.v-same{color:#555}
code{font-size:.9em}small{color:#666}footer{margin-top:3em;color:#666;font-size:.85em}
"""


def render(results: dict, sections=None) -> tuple[dict, str]:
    """The report's JSON (the results plus each section's numbers) and its HTML page."""
    built = [s for s in (f(results) for f in (sections or SECTIONS)) if s is not None]
    doc = dict(results) | {"sections": {s.key: s.data for s in built}}
    title = f"Distillation report: {results['models'].get('model', '?')}"
    toc = "".join(f'<li><a href="#{s.key}">{_e(s.title)}</a></li>' for s in built)
    parts = "".join(f'<h2 id="{s.key}">{_e(s.title)}</h2>{s.html}' for s in built)
    took = results.get("seconds")
    footer = "Written by kd report" + (f"; measured in {took:.0f} s" if took else "") + "."
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><ul>{toc}</ul>{parts}<footer>{_e(footer)}</footer></body></html>"
    )
    return doc, page


def write_report(results: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (the HTML page) and the same name with ``.json``; returns both paths."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {out}: name an .html file (its JSON goes beside it)")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    doc, page = render(results)
    json_path = out.with_suffix(".json")
    atomic_write_bytes(out, page.encode("utf-8"))
    atomic_write_json(json_path, doc)
    return out, json_path


def load_json(path: str | Path) -> dict:
    """A report's JSON read back (for tests and tools)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
