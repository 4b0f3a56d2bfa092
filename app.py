"""The multilingual-kd demo: launch a distillation, compare similarities, see the spaces align.

Layout and wiring only: the work is done by ``kd/`` (models, training, evaluation, data) and
``viz/`` (projections, figures, metrics). The handlers are plain module-level functions, so
tests call them without a browser; :func:`build_demo` wires them to the page.

State:

- read-only models (teachers, untrained students) are loaded lazily, once, behind
  :func:`get_encoder` (an LRU cache keyed by model name), with their loading state shown;
- each visitor's distilled student, results and stop flag live in a :class:`Visitor` kept in
  ``gr.State`` (with a time to live), never in module globals;
- one training runs at a time per server (``concurrency_limit=1``); the other tabs stay usable.

Run ``python app.py``: it serves on 0.0.0.0 and the port in ``GRADIO_SERVER_PORT`` or ``PORT``
(7860 by default), as Hugging Face Spaces expect. At launch the default teacher and student load
in the background (``KD_PRELOAD``: other comma-separated ids, or empty for none) while UMAP
compiles.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from kd.langs import DEV_LANGS, lang_name, parse_langs

log = logging.getLogger("kd.app")

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"
PAIRS_DIR = ASSETS / "pairs"
COMPARE_FILE = ASSETS / "compare_sentences.tsv"
LEARN_FILE = ASSETS / "learn.md"
WORK_ROOT = Path(tempfile.gettempdir()) / "kd-app"

# The offline ids (kept here as text so that importing the app does not import torch).
DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_STUDENT = "intfloat/multilingual-e5-small"
TEACHER_CHOICES = [DEFAULT_TEACHER, "sentence-transformers/all-mpnet-base-v2"]
STUDENT_CHOICES = [DEFAULT_STUDENT]

# Limits that keep one visitor from taking a 2-core server for long.
MAX_TEXT_CHARS = 20_000
MAX_LINES = 40
MAX_LINE_CHARS = 1_000
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_POINTS = 2_000  # sentences per model in one aligned-space picture
MAX_PAIRS = 2_000
MAX_ENGLISH_ROWS = 20_000
MAX_EPOCHS = 5
MAX_EVAL_PAIRS = 500
MAX_LANGS = 24
FREEZE_LAYERS = 10  # TrainConfig's default: the top 2 of the student's 12 layers train
MIN_PAIRS_SHOWN = 200  # languages with fewer gettext pairs are not offered
VISITOR_TTL_S = 4 * 3600
MODEL_CACHE_SIZE = 6
UPLOAD_SUFFIXES = (".tsv", ".txt", ".jsonl", ".json")

MODEL_LABELS = {
    "teacher": "teacher",
    "untrained": "student, untrained",
    "distilled": "student, distilled",
}
SOURCES = ("built-in sentences", "Tatoeba directory", "uploaded file")


# ---- errors ------------------------------------------------------------------------------------
# The core's messages name CLI flags; the page has labelled fields instead.
_FIELD_NAMES = {
    "--max-pairs": "'pairs per language'",
    "--english-rows": "'English-only rows'",
    "--epochs": "'epochs'",
    "--batch-size": "'batch size'",
    "--lr": "'learning rate'",
    "--loss": "'loss'",
    "--eval-pairs": "'held-out pairs per language'",
    "--freeze-layers": "'frozen layers'",
    "--data": "'your own pairs'",
}


def user_error(message: str) -> gr.Error:
    """A ``gr.Error`` for bad input: the message escaped (gradio renders HTML), no traceback."""
    for flag, label in _FIELD_NAMES.items():
        message = message.replace(flag, label)
    return gr.Error(html.escape(message, quote=False), print_exception=False)


# ---- per-visitor state -------------------------------------------------------------------------
@dataclass
class Visitor:
    """One visitor's work: kept in ``gr.State``, so two visitors never share a student.

    Plain fields only: gradio deep-copies the initial value for every new session.
    """

    workdir: str | None = None
    student_dir: str | None = None  # the distilled student (sentence-transformers folder)
    student_zip: str | None = None
    teacher: str | None = None  # the teacher it was distilled from
    metrics: dict | None = None
    runs: int = 0
    queued: bool = False  # Start pressed, waiting for the training slot
    training: bool = False
    stop_requested: bool = False

    def new_run_dir(self) -> Path:
        """A fresh output folder for the next run, inside this visitor's work folder."""
        if self.workdir is None or not Path(self.workdir).is_dir():
            WORK_ROOT.mkdir(parents=True, exist_ok=True)
            self.workdir = tempfile.mkdtemp(prefix="visitor-", dir=WORK_ROOT)
        self.runs += 1
        return Path(self.workdir) / f"run-{self.runs}"


def forget_visitor(visitor: Visitor | None) -> None:
    """``gr.State``'s delete callback: stop the visitor's training and delete their files."""
    if visitor is None:
        return
    visitor.stop_requested = True
    if visitor.workdir:
        shutil.rmtree(visitor.workdir, ignore_errors=True)


# ---- models: loaded once, lazily, behind a cache -----------------------------------------------
_model_state: dict[str, str] = {}  # public model name -> "loading" | "ready" | "failed"
_model_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_trainings = {"running": 0}
_trainings_lock = threading.Lock()
_warm_up_started = threading.Event()


@functools.lru_cache(maxsize=MODEL_CACHE_SIZE)
def _load_encoder(name: str):
    from kd.models import Encoder, pick_device, quiet_transformers

    quiet_transformers()
    return Encoder.load(name, pick_device("auto"))


def get_encoder(name: str, *, public: bool = True):
    """The encoder for a model id or folder, loaded on first use and cached (LRU, by name).

    Args:
        name: a model id or a sentence-transformers folder.
        public: show its loading state in the page's status line (False for a visitor's own
            student, whose folder name is nobody else's business).

    Raises:
        ValueError: the model cannot be loaded (the message says why).
    """
    name = (name or "").strip()
    if not name:
        raise ValueError("no model chosen; pick a teacher and a student at the top of the page")
    with _locks_guard:
        lock = _model_locks.setdefault(name, threading.Lock())
    with lock:  # one load per name; other names load (and hit the cache) meanwhile
        if public and _model_state.get(name) != "ready":
            _model_state[name] = "loading"
        try:
            encoder = _load_encoder(name)
        except Exception:
            if public:
                _model_state[name] = "failed"
            raise
        if public:
            _model_state[name] = "ready"
        return encoder


@functools.lru_cache(maxsize=32)
def _encode_cached(name: str, sentences: tuple[str, ...], public: bool):
    vectors = get_encoder(name, public=public).encode(list(sentences))
    vectors.flags.writeable = False  # shared by every caller that asks for the same sentences
    return vectors


def encode(name: str, sentences: list[str], *, public: bool = True):
    """``np.ndarray (n, d)`` of a model's vectors, cached by (model, sentences): a redraw with
    another projection or the same Compare text does not encode again."""
    return _encode_cached((name or "").strip(), tuple(sentences), public)


def _warm_models(names: list[str]) -> None:
    for name in names:
        try:
            get_encoder(name)
        except Exception as err:  # shown in the status line; the page keeps working
            log.warning("could not preload %s: %s", name, err)


def start_background_warm_up(models: list[str] | None = None) -> None:
    """Compile UMAP and load the default models in background threads (called at launch)."""
    from viz.project import warm_up_in_background

    _warm_up_started.set()
    warm_up_in_background()
    names = models if models is not None else [DEFAULT_TEACHER, DEFAULT_STUDENT]
    threading.Thread(target=_warm_models, args=(names,), name="kd-preload", daemon=True).start()


def server_status() -> str:
    """One status line: which models are loaded, whether UMAP is compiled, trainings running."""
    from viz.project import is_warm

    marks = {"ready": "ready", "loading": "loading…", "failed": "failed to load"}
    models = (
        ", ".join(
            f"`{name.rsplit('/', 1)[-1]}` {marks[state]}" for name, state in _model_state.items()
        )
        or "none loaded yet (they load on first use)"
    )
    if is_warm():
        umap = "ready"
    elif _warm_up_started.is_set():
        umap = "compiling in the background (PCA works meanwhile)"
    else:
        umap = "compiles on first use (20-40 s)"
    running = _trainings["running"]
    training = f"{running} running" if running else "idle"
    return f"**Status** · models: {models} · UMAP: {umap} · training: {training}"


def _status_tick():
    busy = not _all_ready()
    return server_status(), gr.Timer(value=2 if busy else 15)


def _all_ready() -> bool:
    from viz.project import is_warm

    return is_warm() and all(state != "loading" for state in _model_state.values())


# ---- Compare -----------------------------------------------------------------------------------
def default_compare_text() -> str:
    """The Compare tab's prefilled sentences (assets/compare_sentences.tsv), one per line."""
    lines = COMPARE_FILE.read_text(encoding="utf-8").splitlines()[1:]
    return "\n".join(line.split("\t", 1)[1] for line in lines if "\t" in line)


def read_sentences(text: str | None) -> list[str]:
    """The sentences of a text box, one per line, cleaned; ``ValueError`` if unusable."""
    from kd.data import clean_text

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


def _vectors(
    sentences: list[str], teacher: str, student: str, visitor: Visitor | None, which=None
) -> dict:
    """label -> vectors of the sentences by the teacher, the untrained student and the
    visitor's own distilled student (if they have one), in that order."""
    which = which or list(MODEL_LABELS)
    vectors = {}
    if "teacher" in which:
        vectors[MODEL_LABELS["teacher"]] = encode(teacher, sentences)
    if "untrained" in which:
        vectors[MODEL_LABELS["untrained"]] = encode(student, sentences)
    if "distilled" in which and visitor is not None and visitor.student_dir:
        if not Path(visitor.student_dir).is_dir():
            raise ValueError("your distilled student has expired; run the Distill tab again")
        vectors[MODEL_LABELS["distilled"]] = encode(visitor.student_dir, sentences, public=False)
    return vectors


def closest_pairs(sentences: list[str], matrices: dict, top: int = 10):
    """The ``top`` most similar pairs of different sentences, ranked by the last model."""
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
        "sentence A": [sentences[k] for k in i[order]],
        "sentence B": [sentences[k] for k in j[order]],
    }
    for name in names:
        rows[f"cos ({name})"] = np.round(matrices[name][i[order], j[order]], 3)
    return pd.DataFrame(rows)


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
        vectors = _vectors(sentences, teacher, student, visitor)
        matrices = {name: cosine_matrix(v) for name, v in vectors.items()}
        fig = similarity_heatmaps(matrices, sentences, title="cosine similarity")
        return fig, closest_pairs(sentences, matrices)
    except ValueError as err:
        raise user_error(str(err)) from None


# ---- Aligned spaces ----------------------------------------------------------------------------
def builtin_langs() -> list[str]:
    """Languages of the built-in sentence set (assets/pairs/XX.tsv)."""
    return sorted(p.stem for p in PAIRS_DIR.glob("*.tsv"))


def check_upload(path: str | None, what: str = "the uploaded file") -> Path:
    """An uploaded file's path after checking that it exists, is small enough, has a known type."""
    if not path:
        raise ValueError(f"no file uploaded; upload {what} first")
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{what} is gone from the server; upload it again")
    size = file.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(
            f"{file.name} is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB"
        )
    if file.suffix.lower() not in UPLOAD_SUFFIXES:
        raise ValueError(
            f"{file.name}: unknown file type; upload .tsv/.txt (english<TAB>translation per "
            "line, first line en<TAB>xx) or .jsonl"
        )
    return file


def _read_upload(file: Path, langs: list[str] | None = None):
    """Pairs of an uploaded file; a file without an ``en<TAB>xx`` header is taken to be in the
    chosen language when exactly one is chosen (as ``kd distill --data`` does)."""
    from kd.data import read_pairs

    try:
        return read_pairs(file)
    except ValueError as err:
        first = err
    if langs and len(langs) == 1:
        try:
            return read_pairs(file, langs[0])
        except ValueError:
            pass
    # The temporary folder's name means nothing to the visitor.
    raise ValueError(str(first).replace(str(file), file.name)) from None


def sentence_set(
    source: str, tatoeba_dir: str | None, upload: str | None, langs_text: str, per_lang: int
) -> tuple[list[str], list[str], list[int]]:
    """Sentences, their languages and pair ids: each English sentence once, then translations.

    Raises:
        ValueError: an unknown language, a missing or malformed source, too many points.
    """
    from kd.data import read_tatoeba, read_tsv, sample_per_lang

    langs = parse_langs(langs_text or "")
    if len(langs) > MAX_LANGS:
        raise ValueError(f"{len(langs)} languages; pick at most {MAX_LANGS}")
    langs = [lang for lang in langs if lang != "en"]
    if not langs:
        raise ValueError("pick at least one language besides English, e.g. de,fr,ja")
    per_lang = int(per_lang or 0)
    if per_lang < 1:
        raise ValueError("'sentences per language' must be at least 1")
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
        if not (tatoeba_dir or "").strip():
            raise ValueError("type the path of a folder with tatoeba.XXX-eng.XXX files")
        by_lang = read_tatoeba(Path(tatoeba_dir.strip()).expanduser(), langs)
        pairs = [p for lang in langs for p in by_lang[lang]]
    elif source == SOURCES[2]:
        file = check_upload(upload, "a .tsv file of english<TAB>translation lines")
        read = _read_upload(file, langs)
        present = sorted({p.lang for p in read if p.other is not None})
        pairs = [p for p in read if p.lang in langs]
        if not pairs:
            raise ValueError(
                f"{file.name} has no pairs in {', '.join(langs)}; its languages: "
                f"{', '.join(present) or 'none'}"
            )
    else:
        raise ValueError(f"unknown sentence source {source!r}; pick one of {', '.join(SOURCES)}")
    pairs = [p for p in sample_per_lang(pairs, per_lang, seed=0) if p.other is not None]
    english = list(dict.fromkeys(p.en for p in pairs))
    ids = {en: i for i, en in enumerate(english)}
    sentences = english + [p.other for p in pairs]
    if len(sentences) > MAX_POINTS:
        raise ValueError(
            f"that is {len(sentences):,} sentences per model; the limit is {MAX_POINTS:,}: "
            "lower 'sentences per language' or pick fewer languages"
        )
    if len(sentences) < 4:
        raise ValueError("fewer than 4 sentences; raise 'sentences per language'")
    lang_col = ["en"] * len(english) + [p.lang for p in pairs]
    return sentences, lang_col, [ids[en] for en in english] + [ids[p.en] for p in pairs]


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
        mean translation cosine per language and model in the original space).

    Raises:
        gr.Error: bad languages, a missing or malformed source, too many points, a bad model.
    """
    import numpy as np

    from viz.figures import aligned_scatter
    from viz.metrics import (
        projection_trustworthiness,
        translation_cosine,
        translation_cosine_by_lang,
    )
    from viz.project import is_warm, project_frame

    try:
        if not which:
            raise ValueError("pick at least one model to draw")
        sentences, langs, pair_ids = sentence_set(source, tatoeba_dir, upload, langs_text, per_lang)
        notes = []
        if "distilled" in which and (visitor is None or not visitor.student_dir):
            notes.append("No distilled student yet: run the Distill tab to add one.")
        vectors = _vectors(sentences, teacher, student, visitor, which)
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
        lines = [
            f"**{len(sentences)} sentences per model** ({len(set(langs)) - 1} languages + "
            f"English), {method.upper()} in {seconds:.1f} s"
            + ("" if was_warm or method != "umap" else " (including UMAP's one-time compile)"),
            "",
            "Mean translation cosine in the original space (translation vs its English "
            "sentence): " + ", ".join(f"*{m}* **{v:.3f}**" for m, v in overall.items()),
            "",
            f"Trustworthiness of the map: **{trust:.3f}** (1.0: neighbours on the map are "
            "neighbours in the original space).",
        ]
        return fig, "\n".join(lines + ([""] + notes if notes else [])), table
    except ValueError as err:
        raise user_error(str(err)) from None


# ---- Distill -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _gettext_counts() -> dict[str, int]:
    from kd.gettext_source import gettext_counts

    try:
        return gettext_counts()
    except (OSError, ValueError) as err:
        log.warning("no gettext catalogs: %s", err)
        return {}


def _lang_label(code: str, counts: dict[str, int] | None) -> str:
    try:
        name = lang_name(code)
    except ValueError:
        name = code
    if counts is None:
        return f"{code} · {name}"
    return f"{code} · {name} ({counts.get(code, 0):,} pairs)"


def language_choices() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(label with the number of gettext pairs, code) of the development languages, and of
    the other languages with at least ``MIN_PAIRS_SHOWN`` pairs, most pairs first."""
    counts = _gettext_counts()
    extra = [
        c for c, n in counts.items() if c not in DEV_LANGS and c != "en" and n >= MIN_PAIRS_SHOWN
    ]
    dev = [(_lang_label(c, counts), c) for c in DEV_LANGS]
    return dev, [(_lang_label(c, counts), c) for c in extra]


def _language_update():
    dev, more = language_choices()
    return gr.CheckboxGroup(choices=dev), gr.Dropdown(choices=more)


def _whole(value, field: str, low: int, high: int) -> int:
    if value is None or value == "":
        raise ValueError(f"'{field}' is empty; type a number from {low} to {high}")
    number = float(value)
    if number != int(number) or not low <= number <= high:
        raise ValueError(f"'{field}' must be a whole number from {low} to {high}, got {value}")
    return int(number)


def make_config(
    teacher: str,
    student: str,
    langs: list[str] | None,
    more_langs: list[str] | None,
    max_pairs,
    english_rows,
    epochs,
    batch_size,
    lr,
    loss: str,
    eval_pairs,
    evals,
    freeze_layers,
    own_pairs: str | None,
    out: str = "student",
):
    """The run's ``TrainConfig`` from the form, with the app's caps; ``ValueError`` if bad."""
    from kd.config import TrainConfig

    langs = [*(langs or []), *(more_langs or [])]
    data, own = [], 0
    if own_pairs:
        file = check_upload(own_pairs, "your own pairs")
        # Read now: a malformed file is reported at once, not minutes into the run.
        translated = [p for p in _read_upload(file, langs) if p.other is not None]
        langs += [p.lang for p in translated]  # the file's languages join the run
        own = len(translated)
        data.append(str(file))
    langs = list(dict.fromkeys(langs))
    if not langs:
        raise ValueError("pick at least one language to distil into")
    if len(langs) > MAX_LANGS:
        raise ValueError(f"{len(langs)} languages; pick at most {MAX_LANGS}")
    max_pairs = _whole(max_pairs, "pairs per language", 0, MAX_PAIRS)
    english_rows = _whole(english_rows, "English-only rows", 0, MAX_ENGLISH_ROWS)
    epochs = _whole(epochs, "epochs", 1, MAX_EPOCHS)
    batch_size = _whole(batch_size, "batch size", 1, 256)
    eval_pairs = _whole(eval_pairs, "held-out pairs per language", 0, MAX_EVAL_PAIRS)
    evals = _whole(evals, "evaluations during training", 0, 20)
    freeze_layers = _whole(freeze_layers, "frozen layers", 0, 48)
    if lr is None or lr == "":
        raise ValueError("'learning rate' is empty; try 1e-4")
    # Steps, estimated before the data is read, to space the dev evaluations out.
    items = english_rows + 2 * (max_pairs * len(langs) + own)
    steps = max(1, items // batch_size) * epochs
    eval_every = max(1, steps // (evals + 1)) if evals and eval_pairs else 0
    return TrainConfig(
        out=out,
        teacher=(teacher or "").strip(),
        student=(student or "").strip(),
        langs=langs,
        max_pairs=max_pairs,
        english_rows=english_rows,
        data=data,
        epochs=epochs,
        batch_size=batch_size,
        lr=float(lr),
        loss=loss,
        eval_pairs=eval_pairs,
        eval_every=eval_every,
        freeze_layers=freeze_layers,
        checkpoint_every=0,
        device="auto",
    )


def _check_model_name(name: str) -> None:
    """Cheap checks of a model name before queueing (offline ids resolve lazily)."""
    from kd.models import OFFLINE_MODELS, resolve_model

    if (name or "").strip() not in OFFLINE_MODELS:
        resolve_model(name)


def prepare_run(*args):
    """Validate the form and arm the visitor's run; ``gr.Error`` at once if anything is wrong.

    Takes the same arguments as :func:`run_distillation` (the form, then the visitor).
    """
    *form, visitor = args
    visitor = visitor if visitor is not None else Visitor()
    try:
        cfg = make_config(*form)
        _check_model_name(cfg.teacher)
        _check_model_name(cfg.student)
    except ValueError as err:
        raise user_error(str(err)) from None
    visitor.stop_requested = False
    visitor.queued = True
    return "Queued: waiting for the training slot (one distillation at a time).", visitor


def request_stop(visitor: Visitor | None) -> str:
    """The Stop button: the run ends after the current step; the student so far is kept."""
    if visitor is None or not (visitor.training or visitor.queued):
        return "Nothing is running."
    visitor.stop_requested = True
    if visitor.training:
        return "Stopping: the student trained so far is being evaluated and saved…"
    return "Stopped before the run started."


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _curve(history: list[dict], accuracy: list[dict], references: dict | None = None):
    import pandas as pd

    from viz.figures import training_curves

    hist = pd.DataFrame(history, columns=["step", "loss"])
    acc = pd.DataFrame(accuracy, columns=["step", "lang", "accuracy"]) if accuracy else None
    return training_curves(hist, acc, references, title="distillation")


def _headline(metrics: dict) -> str:
    return "cross_mean_accuracy" if "cross_mean_accuracy" in metrics else "student_mean_accuracy"


STAGES = {"teacher": "teacher", "student_untrained": "student, untrained"}
STAGES["student_distilled"] = "student, distilled"
RESULT_COLUMNS = {
    "cross_mean_accuracy": "cross-model retrieval",
    "student_mean_accuracy": "own retrieval",
    "english_fidelity": "English fidelity",
    "mse_x100": "MSE×100",
}


def results_table(metrics: dict):
    """Before/after table: one row per (language, model), the summary metrics as columns."""
    import pandas as pd

    present = [stage for stage in STAGES if stage in metrics]
    langs = list(dict.fromkeys(lang for s in present for lang in metrics[s]))
    langs = ["mean"] + [lang for lang in langs if lang != "mean"] if "mean" in langs else langs
    rows = []
    for lang in langs:
        for stage in present:
            values = metrics[stage].get(lang, {})
            row = {"language": lang, "model": STAGES[stage]}
            row |= {
                label: round(values[k], 3) if k in values else None
                for k, label in RESULT_COLUMNS.items()
            }
            rows.append(row)
    return pd.DataFrame(rows, columns=["language", "model", *RESULT_COLUMNS.values()])


def _bars(metrics: dict):
    import pandas as pd

    from viz.figures import accuracy_bars, empty_figure

    rows = [
        {"lang": lang, "model": STAGES[stage], "accuracy": values["cross_mean_accuracy"]}
        for stage in STAGES
        for lang, values in metrics.get(stage, {}).items()
        if "cross_mean_accuracy" in values
    ]
    if not rows:
        return empty_figure("no held-out pairs were evaluated")
    return accuracy_bars(pd.DataFrame(rows), title="cross-model retrieval on held-out pairs")


def _zip_student(out: Path) -> str:
    """The student folder as a zip (stored, not deflated: float weights barely compress)."""
    path = out.parent / f"kd-student-{out.name}.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in sorted(out.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(out).as_posix())
    return str(path)


def _train_worker(cfg, events: queue.Queue, visitor: Visitor) -> None:
    from kd.train import distill

    try:
        result = distill(
            cfg,
            on_step=lambda step, record: events.put(("step", (step, record))),
            should_stop=lambda: visitor.stop_requested,
            status=lambda message: events.put(("status", message)),
            progress=lambda phase, done, total: events.put(("progress", (phase, done, total))),
        )
        events.put(("done", result))
    except ValueError as err:
        events.put(("error", str(err)))
    except Exception as err:  # shown to the visitor; the server keeps serving
        log.exception("distillation failed")
        events.put(("error", f"the distillation failed: {type(err).__name__}: {err}"))


def run_distillation(
    teacher: str,
    student: str,
    langs: list[str] | None,
    more_langs: list[str] | None,
    max_pairs,
    english_rows,
    epochs,
    batch_size,
    lr,
    loss: str,
    eval_pairs,
    evals,
    freeze_layers,
    own_pairs: str | None,
    visitor: Visitor | None,
    progress=gr.Progress(),  # noqa: B008 - gradio injects the tracker through this default
) -> Iterator[tuple]:
    """Run one distillation in a worker thread and stream its progress.

    Yields:
        (status Markdown, loss/accuracy figure, results DataFrame, accuracy bars, zip path,
        visitor), with ``gr.skip()`` for outputs that did not change. The last yield carries
        the before/after table and the student's zip; the visitor then holds the student.

    Raises:
        gr.Error: bad settings, a model that cannot be loaded, or a failed run.
    """
    from viz.figures import empty_figure

    visitor = visitor if visitor is not None else Visitor()
    skip = gr.skip()
    visitor.queued = False
    if visitor.stop_requested:  # Stop was pressed while the run waited for the slot
        visitor.stop_requested = False
        yield "Stopped before the run started.", skip, skip, skip, skip, visitor
        return
    try:
        cfg = make_config(
            teacher,
            student,
            langs,
            more_langs,
            max_pairs,
            english_rows,
            epochs,
            batch_size,
            lr,
            loss,
            eval_pairs,
            evals,
            freeze_layers,
            own_pairs,
            out=str(visitor.new_run_dir()),
        )
    except ValueError as err:
        raise user_error(str(err)) from None

    events: queue.Queue = queue.Queue()
    worker = threading.Thread(
        target=_train_worker, args=(cfg, events, visitor), name="kd-distill", daemon=True
    )
    history: list[dict] = []
    accuracy: list[dict] = []
    log_lines: list[str] = []
    result = None
    visitor.training = True
    with _trainings_lock:
        _trainings["running"] += 1
    worker.start()
    try:
        yield (
            "Starting…",
            empty_figure("the loss curve appears with the first steps"),
            None,
            None,
            None,
            visitor,
        )
        last_yield = 0.0
        while result is None:
            try:
                kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                if not worker.is_alive() and events.empty():
                    raise user_error("the training stopped without a result") from None
                continue
            if kind == "error":
                raise user_error(payload)
            if kind == "done":
                result = payload
            elif kind == "status":
                log_lines.append(payload)
                progress(0, desc=payload)
                yield (
                    "\n".join(f"- {line}" for line in log_lines[-8:]),
                    skip,
                    skip,
                    skip,
                    skip,
                    skip,
                )
            elif kind == "progress":
                phase, done, total = payload
                progress((done, total), desc=f"encoding: {phase}", unit="sentences")
            elif kind == "step":
                step, record = payload
                total = int(record["total_steps"])
                history.append({"step": step, "loss": record["loss"]})
                for lang, values in record.get("eval", {}).items():
                    accuracy.append(
                        {"step": step, "lang": lang, "accuracy": values[_headline(values)]}
                    )
                line = (
                    f"step {step}/{total} · loss {record['loss']:.4f} · epoch "
                    f"{record['epoch']:.2f} · {record['items_per_s']:.0f} items/s · "
                    f"ETA {_duration(record['eta_s'])}"
                )
                progress((step, total), desc=line, unit="steps")
                now = time.monotonic()
                if "eval" in record or now - last_yield >= 1.0 or step == total:
                    last_yield = now
                    status = "\n".join(f"- {s}" for s in [*log_lines[-6:], line])
                    yield status, _curve(history, accuracy), skip, skip, skip, skip
    finally:
        if result is None and worker.is_alive():  # the visitor left, or the event was cancelled
            visitor.stop_requested = True
        visitor.training = False
        with _trainings_lock:
            _trainings["running"] -= 1

    visitor.stop_requested = False  # a Stop pressed during this run has been honoured
    metrics = result.metrics
    old = [visitor.student_dir, visitor.student_zip]
    visitor.student_dir = str(result.out)
    visitor.student_zip = _zip_student(Path(result.out))
    visitor.teacher = cfg.teacher
    visitor.metrics = metrics
    for path in old:  # one student per visitor on disk: the previous run's goes
        if path and Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path:
            Path(path).unlink(missing_ok=True)
    references = {}
    for stage in ("teacher", "student_untrained"):
        mean = metrics.get(stage, {}).get("mean")
        if mean:
            references[STAGES[stage]] = mean[_headline(mean)]
    how = "stopped early" if result.stopped else "finished"
    status = (
        f"**Distillation {how}** after {result.steps} of {metrics['total_steps']} steps "
        f"({_duration(metrics['train_seconds'])} of training). The student is yours for this "
        "session: the Compare and Aligned-spaces tabs now show it too. Download it below; "
        "unzip it and load it with `SentenceTransformer(folder)`."
    )
    yield (
        status,
        _curve(history, accuracy, references),
        results_table(metrics),
        _bars(metrics),
        visitor.student_zip,
        visitor,
    )


# ---- the page ----------------------------------------------------------------------------------
INTRO = (
    "# Multilingual knowledge distillation\n"
    "An English **teacher** model knows which English sentences mean the same thing. Here a "
    "multilingual **student** learns to put every translation where the teacher puts the "
    "English sentence (Reimers & Gurevych, 2020). Distil one, then compare sentences in your "
    "own languages and watch the spaces align. The *Learn* tab explains the method."
)


def build_demo() -> gr.Blocks:
    """The app's page: models row, then the Distill, Compare, Aligned spaces and Learn tabs.

    Loads no model and starts no thread: that happens on first use and in :func:`main`.
    """
    with gr.Blocks(title="Multilingual knowledge distillation") as demo:
        visitor = gr.State(Visitor(), time_to_live=VISITOR_TTL_S, delete_callback=forget_visitor)
        gr.Markdown(INTRO)
        status = gr.Markdown("**Status** · starting…", elem_id="server-status")
        with gr.Row():
            teacher = gr.Dropdown(
                TEACHER_CHOICES,
                value=DEFAULT_TEACHER,
                allow_custom_value=True,
                label="teacher (English)",
                info="an offline model, or type a local folder or Hugging Face id",
            )
            student = gr.Dropdown(
                STUDENT_CHOICES,
                value=DEFAULT_STUDENT,
                allow_custom_value=True,
                label="student (multilingual)",
                info="default: a 4-bit-derived copy of multilingual-e5-small",
            )

        with gr.Tabs():
            with gr.Tab("Distill", id="distill"), gr.Row():
                with gr.Column(scale=1, min_width=320):
                    langs = gr.CheckboxGroup(
                        [(_lang_label(c, None), c) for c in DEV_LANGS],
                        value=["de", "fr", "es", "ru", "ja", "zh", "ar"],
                        label="languages (translated software messages available here)",
                        elem_id="distill-langs",
                    )
                    more_langs = gr.Dropdown(
                        [],
                        value=[],
                        multiselect=True,
                        label="more languages",
                        info="every language with at least 200 pairs here; type to search",
                        elem_id="more-langs",
                    )
                    max_pairs = gr.Slider(
                        0, MAX_PAIRS, value=100, step=10, label="pairs per language"
                    )
                    english_rows = gr.Slider(
                        0, MAX_ENGLISH_ROWS, value=1000, step=100, label="English-only rows"
                    )
                    with gr.Row():
                        epochs = gr.Slider(1, MAX_EPOCHS, value=1, step=1, label="epochs")
                        batch_size = gr.Slider(4, 256, value=32, step=4, label="batch size")
                    with gr.Row():
                        lr = gr.Number(1e-4, label="learning rate", minimum=1e-7, maximum=0.1)
                        loss = gr.Radio(["mse", "kl", "cos"], value="mse", label="loss")
                    with gr.Accordion("advanced", open=False):
                        eval_pairs = gr.Slider(
                            0,
                            MAX_EVAL_PAIRS,
                            value=50,
                            step=10,
                            label="held-out pairs per language",
                        )
                        evals = gr.Slider(
                            0, 10, value=3, step=1, label="evaluations during training"
                        )
                        freeze_layers = gr.Slider(
                            0, 24, value=FREEZE_LAYERS, step=1, label="frozen layers"
                        )
                        own_pairs = gr.File(
                            label="your own pairs (optional): .tsv with a first line "
                            "en<TAB>xx, then english<TAB>translation",
                            file_types=[".tsv", ".txt", ".jsonl"],
                            type="filepath",
                            elem_id="own-pairs",
                        )
                    with gr.Row():
                        start = gr.Button("Start distillation", variant="primary", elem_id="start")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop")
                with gr.Column(scale=2):
                    run_status = gr.Markdown(
                        "Pick languages and press Start.", elem_id="run-status"
                    )
                    curve = gr.Plot(label="loss and dev accuracy", elem_id="curve")
                    results = gr.Dataframe(
                        label="before / after, on held-out pairs",
                        headers=["language", "model", *RESULT_COLUMNS.values()],
                        interactive=False,
                        elem_id="results",
                    )
                    bars = gr.Plot(label="cross-model retrieval per language")
                    download = gr.File(
                        label="the distilled student (zip)",
                        interactive=False,
                        elem_id="download",
                    )

            with gr.Tab("Compare", id="compare"):
                gr.Markdown(
                    "One sentence per line, in any languages. Each model's cosine similarity "
                    "between every two sentences; your distilled student appears once you have "
                    "one. The closest pairs are ranked by the last model shown."
                )
                text = gr.Textbox(
                    default_compare_text(),
                    lines=12,
                    max_lines=40,
                    label="sentences",
                    elem_id="compare-text",
                )
                compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
                heatmaps = gr.Plot(label="cosine similarity", elem_id="heatmaps")
                pairs = gr.Dataframe(
                    label="closest pairs of different sentences",
                    headers=["rank", "sentence A", "sentence B", "cos (teacher)"],
                    interactive=False,
                    elem_id="pairs",
                )

            with gr.Tab("Aligned spaces", id="aligned"):
                gr.Markdown(
                    "Teacher and student vectors of the same sentences, projected by **one** "
                    "fit so that they share coordinates. Grey lines join each translation to "
                    "its English sentence: short lines mean aligned spaces."
                )
                with gr.Row():
                    source = gr.Radio(list(SOURCES), value=SOURCES[0], label="sentences")
                    tatoeba_dir = gr.Textbox(
                        label="Tatoeba folder (tatoeba.XXX-eng.XXX files)",
                        placeholder="../shared/data/tatoeba-dev",
                    )
                    upload = gr.File(
                        label="or upload a .tsv (en<TAB>xx header)",
                        file_types=[".tsv", ".txt", ".jsonl"],
                        type="filepath",
                    )
                with gr.Row():
                    aligned_langs = gr.Textbox(
                        "de,fr,es,ru,ja,zh,ar,hi",
                        label="languages (comma-separated codes)",
                        elem_id="aligned-langs",
                    )
                    per_lang = gr.Slider(2, 500, value=16, step=1, label="sentences per language")
                    method = gr.Radio(["pca", "umap"], value="pca", label="projection")
                    which = gr.CheckboxGroup(
                        [(label, key) for key, label in MODEL_LABELS.items()],
                        value=list(MODEL_LABELS),
                        label="models",
                    )
                draw = gr.Button("Draw", variant="primary", elem_id="draw")
                scatter = gr.Plot(label="aligned spaces", elem_id="scatter")
                numbers = gr.Markdown(elem_id="numbers")
                cosines = gr.Dataframe(
                    label="mean translation cosine per language",
                    headers=["lang", "teacher", "student, untrained"],
                    interactive=False,
                )

            with gr.Tab("Learn", id="learn"):
                gr.Markdown(
                    LEARN_FILE.read_text(encoding="utf-8"),
                    latex_delimiters=[
                        {"left": "$$", "right": "$$", "display": True},
                        {"left": "$", "right": "$", "display": False},
                    ],
                )

        form = [
            teacher,
            student,
            langs,
            more_langs,
            max_pairs,
            english_rows,
            epochs,
            batch_size,
            lr,
            loss,
            eval_pairs,
            evals,
            freeze_layers,
            own_pairs,
        ]
        start.click(
            prepare_run,
            [*form, visitor],
            [run_status, visitor],
            concurrency_limit=None,
            api_name="prepare_run",
        ).success(
            run_distillation,
            [*form, visitor],
            [run_status, curve, results, bars, download, visitor],
            concurrency_limit=1,
            concurrency_id="training",
            api_name="distill",
            show_progress_on=[run_status],
        )
        stop.click(request_stop, visitor, run_status, concurrency_limit=None, api_name="stop")
        compare_btn.click(
            compare,
            [text, teacher, student, visitor],
            [heatmaps, pairs],
            concurrency_limit=4,
            api_name="compare",
        )
        draw.click(
            aligned_space,
            [
                source,
                tatoeba_dir,
                upload,
                aligned_langs,
                per_lang,
                method,
                which,
                teacher,
                student,
                visitor,
            ],
            [scatter, numbers, cosines],
            concurrency_limit=2,
            api_name="aligned",
        )

        timer = gr.Timer(2)
        timer.tick(
            _status_tick,
            None,
            [status, timer],
            show_progress="hidden",
            concurrency_limit=None,
            api_visibility="private",
        )
        demo.load(server_status, None, status, api_visibility="private")
        demo.load(_language_update, None, [langs, more_langs], api_visibility="private")
    demo.queue(max_size=64)
    return demo


def main() -> None:
    """``python app.py``: warm up in the background and serve on the host and port Spaces set."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    preload = os.environ.get("KD_PRELOAD")  # comma-separated model ids; "" loads none early
    start_background_warm_up(None if preload is None else [m for m in preload.split(",") if m])
    port = int(os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or 7860)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=port,
        max_file_size=MAX_UPLOAD_BYTES,
    )


demo = build_demo()

if __name__ == "__main__":
    main()
