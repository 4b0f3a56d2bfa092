"""The Distill form: its controls built from ``TrainConfig``'s settings, and the config it gives.

One owner for every setting: each control's label, range and default come from
:class:`kd.config.TrainConfig` (its :class:`kd.config.Setting` metadata and the ``app`` preset),
so the page, the CLI and the core can never disagree about what a value may be. The form is
wired in the order of :data:`FORM_FIELDS` (the ``/distill`` API takes its values in that order);
handlers turn the values into a mapping with :func:`form_values` and build the run's config
once with :func:`make_config`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import gradio as gr

from kd.config import KINDS, SETTINGS, TrainConfig, form_range
from kd.data.pairs import pairs_summary
from kd.data.sources import EVERYDAY_SPEC, GETTEXT_SPEC, read_sources, run_specs
from kd.langs import DEV_LANGS, lang_name
from kd.models.registry import layer_count
from kd.train.stopping import STOP_GRACE_S
from webapp import settings as server
from webapp.model_cache import checked_model
from webapp.session import Visitor
from webapp.settings import MAX_LANGS, MIN_PAIRS_SHOWN
from webapp.uploads import check_upload, read_upload

log = logging.getLogger("kd.app")

PRESET = "app"
"""The :data:`kd.config.PRESETS` entry whose values the form starts from."""

CONFIG_FIELDS = (
    "max_pairs",
    "english_rows",
    "epochs",
    "batch_size",
    "lr",
    "loss",
    "eval_pairs",
    "evals",
    "freeze_layers",
    "head",
)
"""The ``TrainConfig`` fields the form sets directly, each by one control."""

FORM_FIELDS = ("teacher", "student", "langs", "more_langs", *CONFIG_FIELDS, "own_pairs")
"""Every value of the form, in wiring order: the models row, the languages, the settings, the
optional file of the visitor's own pairs."""

APP_DEFAULTS = TrainConfig.from_preset(PRESET)


def control(
    name: str, step: float | None = None, high: float | None = None, **layout
) -> gr.components.Component:
    """The form's control for ``TrainConfig`` field ``name``: a radio for a choice, a number box
    for a rate, a slider for a count, labelled and bounded as the config says (``high``: a
    tighter upper bound, as the student's layer count for the frozen layers)."""
    spec, default = SETTINGS[name], getattr(APP_DEFAULTS, name)
    elem_id = layout.pop("elem_id", f"distill-{name.replace('_', '-')}")
    info = layout.pop("info", None)
    if spec.choices:
        return gr.Radio(
            list(spec.choices), value=default, label=spec.label, info=info, elem_id=elem_id
        )
    low, config_high = form_range(name)
    high = config_high if high is None else high
    if KINDS[name] is float:
        return gr.Number(
            default,
            label=spec.label,
            minimum=low,
            maximum=high,
            info=info,
            elem_id=elem_id,
            **layout,
        )
    if high is None:
        raise ValueError(f"'{name}' has no upper limit: a slider needs one (Setting.server_high)")
    return gr.Slider(
        low,
        high,
        value=default,
        step=step or 1,
        label=spec.label,
        info=info,
        elem_id=elem_id,
        **layout,
    )


def frozen_layers_high(student: str | None, visitor: Visitor | None = None) -> int:
    """The frozen-layers slider's top for ``student``: its layer count where its config on this
    disk says it (freezing every layer leaves only the head to train), the config's bound
    otherwise (a Hub id, a name the page refuses: the run reports those)."""
    try:
        layers = layer_count(checked_model(student, visitor))
    except (ValueError, gr.Error):
        layers = None
    return int(layers or form_range("freeze_layers")[1])


def frozen_layers_slider(student: str | None, value, visitor: Visitor | None = None):
    """The frozen-layers slider after the student changes: bounded by its layers, the chosen
    value kept where it fits."""
    high = frozen_layers_high(student, visitor)
    try:
        value = min(int(value), high)
    except (TypeError, ValueError):
        value = min(APP_DEFAULTS.freeze_layers, high)
    return gr.Slider(maximum=high, value=value)


def form_values(values: Sequence) -> dict:
    """The form's values, in :data:`FORM_FIELDS` order, as a mapping by field name."""
    if len(values) != len(FORM_FIELDS):
        raise ValueError(
            f"the Distill form has {len(FORM_FIELDS)} values ({', '.join(FORM_FIELDS)}), "
            f"got {len(values)}"
        )
    return dict(zip(FORM_FIELDS, values, strict=True))


def make_config(form: Mapping, out: str = "student", visitor: Visitor | None = None):
    """The run's ``TrainConfig`` from the form's values (:func:`form_values`).

    The teacher and student names are checked first (:func:`webapp.model_cache.checked_model`):
    a typed path must lie inside the model folders, ``visitor``'s own included. The visitor's own
    pairs are read here, once, so a malformed file is reported at once, not minutes into the
    run; the file's languages join the run. The server's time limit per run
    (``settings.RUN_MINUTES``) is the run's ``max_minutes``.

    Raises:
        kd.config.ConfigError: a setting out of its range (its message names the label via
            ``for_page()``).
        ValueError: anything else wrong, in words for the page.
    """
    teacher = checked_model(form.get("teacher"), visitor)
    student = checked_model(form.get("student"), visitor)
    langs = [
        *_codes(form.get("langs"), "languages"),
        *_codes(form.get("more_langs"), "more languages"),
    ]
    data = []
    if form.get("own_pairs"):
        file = check_upload(form["own_pairs"], "your own pairs")
        if visitor is not None and str(file) not in visitor.uploads:
            visitor.uploads.append(str(file))  # deleted with the visitor's other files
        translated = [p for p in read_upload(file, langs) if p.other is not None]
        langs += [p.lang for p in translated]
        data.append(str(file))
    langs = list(dict.fromkeys(langs))
    if not langs:
        raise ValueError("pick at least one language to distil into")
    if len(langs) > MAX_LANGS:
        raise ValueError(f"{len(langs)} languages; pick at most {MAX_LANGS}")
    settings = {name: form.get(name) for name in CONFIG_FIELDS}
    cfg = TrainConfig.from_values(
        {**settings, "out": out, "teacher": teacher, "student": student, "langs": langs}
        | {"data": data, "max_minutes": float(server.RUN_MINUTES)},
        preset=PRESET,
        server=True,
    )
    if data and cfg.max_pairs:  # the default source still gives "pairs per language"
        cfg = dataclasses.replace(cfg, data=["default", *data])
    return cfg


def _codes(value, field: str) -> list[str]:
    """A languages field's codes: the page sends a list; an API call may send one string.
    Each code is checked by :func:`kd.langs.normalize_lang` (one line naming the bad one)."""
    from kd.langs import normalize_lang

    if value is None or value == "":
        return []
    items = [value] if isinstance(value, str) else list(value)
    codes = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"'{field}': give language codes, got {item!r}")
        try:
            codes.append(normalize_lang(item.split(" ", 1)[0]))
        except ValueError as err:
            raise ValueError(f"'{field}': {err}") from None
    return codes


def limits_note() -> str:
    """The run's limits, stated under the Start and Stop buttons."""
    minutes = f"{server.RUN_MINUTES:g}"
    cap = f"Each run ends after **{minutes} minutes** at most" if server.RUN_MINUTES else ""
    stop = (
        "**Stop** works in every phase within seconds: before training begins nothing is kept; "
        f"after, the student so far is evaluated ({STOP_GRACE_S:g} s at most) and saved."
    )
    return f"{cap}, counted from its start (the student so far is kept). {stop}" if cap else stop


# ---- languages and the data they train on ---------------------------------------------------
def source_words(spec: str, workdir: str | Path | None = None) -> str:
    """A data source spec in a visitor's words (a file under ``workdir`` is their own)."""
    if spec == EVERYDAY_SPEC:
        return "kd's own everyday set"
    if spec == GETTEXT_SPEC:
        return "translated software messages (gettext catalogs)"
    if spec.startswith("hf:"):
        return f"{spec[3:]} from the Hugging Face Hub"
    if workdir is not None and Path(spec).resolve().is_relative_to(Path(workdir).resolve()):
        return "your own pairs"
    return f"the server's pairs ({Path(spec).name})"


def _default_specs() -> list[str]:
    """The default source of the development languages (kd.data.sources.default_sources);
    none where the server's KD_DATA names no folder, which the page must survive: a run then
    says so in one line."""
    try:
        return run_specs([], list(DEV_LANGS), 1)[0]
    except ValueError as err:
        log.warning("no default training data: %s", err)
        return []


def default_source_name() -> str:
    """What a run of the form trains on when the visitor brings no pairs, in words."""
    specs = _default_specs()
    if not specs:
        return "none found on this server: upload your own pairs"
    name = " and ".join(source_words(s) for s in specs)
    return f"{name} (400 sentences a language)" if specs == [EVERYDAY_SPEC] else name


@functools.lru_cache(maxsize=1)
def _source_counts() -> dict[str, int]:
    """Pairs per language in the default source of the development languages (none known for
    a Hub set, which is streamed)."""
    specs = _default_specs()
    if not specs or specs[0].startswith("hf:"):
        return {}
    if specs == [GETTEXT_SPEC]:
        return _gettext_counts()
    try:
        return pairs_summary(read_sources(specs, list(DEV_LANGS)))
    except ValueError as err:
        log.warning("cannot count the default source's pairs: %s", err)
        return {}


@functools.lru_cache(maxsize=1)
def _gettext_counts() -> dict[str, int]:
    from kd.data.gettext_source import gettext_counts

    try:
        return gettext_counts()
    except (OSError, ValueError) as err:
        log.warning("no gettext catalogs: %s", err)
        return {}


def lang_label(code: str, counts: dict[str, int] | None, kind: str = "pairs") -> str:
    try:
        name = lang_name(code)
    except ValueError:
        name = code
    if counts is None:
        return f"{code} · {name}"
    return f"{code} · {name} ({counts.get(code, 0):,} {kind})"


def language_choices() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(label with the number of pairs the run would train on, code) of the development
    languages, and of the other languages with at least ``MIN_PAIRS_SHOWN`` translated software
    messages (what a run with one of them trains on, no everyday set having them), most
    first."""
    counts = _source_counts()
    software = _gettext_counts()
    extra = [
        c for c, n in software.items() if c not in DEV_LANGS and c != "en" and n >= MIN_PAIRS_SHOWN
    ]
    dev = [(lang_label(c, counts or None), c) for c in DEV_LANGS]
    return dev, [(lang_label(c, software, "software-message pairs"), c) for c in extra]


def language_update():
    dev, more = language_choices()
    return gr.CheckboxGroup(choices=dev), gr.Dropdown(choices=more)
