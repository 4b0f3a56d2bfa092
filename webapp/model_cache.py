"""Read-only models (teachers, untrained students, visitors' students by folder), loaded
lazily, once, behind an LRU cache, with their loading state in the page's status line.

Every cache here is keyed by a model's canonical name (:func:`webapp.guards.canonical_model_name`:
a folder by its resolved path), so one folder typed three ways is loaded, and indexed, once.
The status line shows the shared default models and the visitor's own, never the names other
visitors typed.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr

from webapp import settings
from webapp.guards import canonical_model_name, check_model_name
from webapp.prebuilt import prebuilt_for
from webapp.session import Visitor
from webapp.settings import DEFAULT_STUDENT, DEFAULT_TEACHER, MODEL_LABELS

log = logging.getLogger("kd.app")

_model_state: dict[str, str] = {}  # canonical model name -> "loading" | "ready" | "failed"
_failed_at: dict[str, float] = {}  # canonical model name -> when its last load failed (monotonic)
MAX_TRACKED = 256  # names whose loading state is kept (the oldest failures are forgotten first)
VISITOR_MODELS_SHOWN = 4  # a visitor's own models named in their status line, the latest last
FAILURE_SHOWN_S = 60.0
"""How long the status line names a model that failed to load: the visitor who typed it saw
the error; later visitors need not read about it."""
_model_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_trainings = {"running": 0}
_trainings_lock = threading.Lock()
_warm_up_started = threading.Event()


class _ModelCache:
    """The loaded models, least recently used first out, kept within two limits: at most
    ``settings.MODEL_CACHE_SIZE`` models and ``settings.MODEL_CACHE_BYTES`` of their tensors
    together (a count alone let six visitors' students hold ~4 GB). The shared models (the
    dropdowns' defaults, the preloaded) go only when no visitor's model is left to go; a model
    larger than the whole budget is handed to its caller and not kept.

    Room is made before a load, for a model as large as the largest loaded so far, not after
    it: a student brought back loads its base model whole, so the server would otherwise hold
    the budget and one more model at once. What an eviction frees goes back to the system
    (:func:`_release_memory`); without that, the process kept ~300 MB more after each.

    Wraps the loader as ``functools.lru_cache`` would, with the same ``cache_info()`` and
    ``cache_clear()``, so the loader itself stays one plain function.
    """

    def __init__(self, load) -> None:
        self._load = load
        self._entries: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0
        self._largest = 0  # the largest model loaded so far: the room the next one needs
        functools.update_wrapper(self, load)

    def __call__(self, name: str):
        with self._lock:
            if name in self._entries:
                self._entries.move_to_end(name)
                self._hits += 1
                return self._entries[name][0]
            dropped = self._evict(keep=name, room=self._largest)
        if dropped:
            _release_memory()
        encoder = self._load(name)  # outside the lock: get_encoder holds one lock per name
        size = model_bytes(encoder)
        with self._lock:
            self._misses += 1
            self._largest = max(self._largest, size)
            if size > settings.MODEL_CACHE_BYTES:
                log.info(
                    "model cache: %s (%.0f MB) exceeds the budget; not kept", name, size / 2**20
                )
                return encoder
            self._entries[name] = (encoder, size)
            self._entries.move_to_end(name)
            dropped = self._evict(keep=name)
        if dropped:
            _release_memory()
        return encoder

    def _evict(self, keep: str, room: int = 0) -> int:
        """Drop models, least recently used first (visitors' before shared ones), until the
        count and the bytes (plus ``room`` for a model about to load) fit; how many went."""
        shared = set(_shared_models())
        dropped = 0
        extra = 1 if room else 0  # the model about to load takes a place too
        while len(self._entries) + extra > max(1, settings.MODEL_CACHE_SIZE) or (
            self.bytes() + room > settings.MODEL_CACHE_BYTES
        ):
            names = [n for n in self._entries if n != keep]
            if not names:
                break
            victim = next((n for n in names if n not in shared), names[0])
            _encoder, size = self._entries.pop(victim)
            dropped += 1
            log.info("model cache: dropped %s (%.0f MB)", victim, size / 2**20)
        return dropped

    def peek(self, name: str):
        """The model kept under ``name``, or None; loads nothing."""
        with self._lock:
            entry = self._entries.get(name)
            return entry[0] if entry else None

    def upgrade(self, name: str, faster, extra: int) -> bool:
        """Keep ``faster`` (the same model on its fast path, :func:`_take_fast_path`) in place
        of ``name``'s encoder, its ``extra`` bytes (the graph) counted; False when the model
        went meanwhile or the budget has no room for the graph."""
        with self._lock:
            if name not in self._entries or self.bytes() + extra > settings.MODEL_CACHE_BYTES:
                return False
            _encoder, size = self._entries[name]
            self._entries[name] = (faster, size + extra)
            return True

    def bytes(self) -> int:
        """The tensors of the models kept, together."""
        return sum(size for _encoder, size in self._entries.values())

    def cache_info(self) -> functools._CacheInfo:
        with self._lock:
            return functools._CacheInfo(
                self._hits, self._misses, settings.MODEL_CACHE_SIZE, len(self._entries)
            )

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._hits = self._misses = 0
            self._largest = 0  # a cleared cache makes room for what it loads from now on


def _release_memory() -> None:
    """Hand what dropped models held back to the system: collect them, then ask glibc to
    return its free pages (it keeps them otherwise; no-op where there is no glibc)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def model_bytes(encoder) -> int:
    """Bytes of a loaded model's tensors (parameters and buffers, each counted once): what it
    holds in memory while cached, give or take the tokenizer."""
    import itertools

    seen, total = set(), 0
    for tensor in itertools.chain(encoder.parameters(), encoder.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


@_ModelCache
def _load_encoder(name: str):
    from kd.models.encoder import pick_device, quiet_transformers
    from kd.models.static import load_encoder

    quiet_transformers()
    # a static folder too (kd.models.static); a delta built on a copy of a base held here
    return load_encoder(name, pick_device("auto"), load_base=_base_model)


def _base_model(base: str, device: str):
    """A delta student's base: a copy of the one the cache holds where it does (a brought-back
    student is most often built on the default student, loaded at launch), else loaded. The
    copy shares the cached tokenizer: building it anew held Python's lock long enough to stall
    every page (the first page took 3.4 s while five sessions brought students back)."""
    from kd.models.encoder import Encoder

    held = _load_encoder.peek(canonical_model_name(base))
    held = getattr(held, "encoder", held)  # a model on its ONNX path keeps its PyTorch one
    if isinstance(held, Encoder) and held.device_name == device:
        return held.clone()
    return Encoder.load(base, device)


def checked_model(name: str | None, visitor: Visitor | None) -> str:
    """The page's one check of a typed model, for every tab: allowed, and not another
    visitor's folder (:func:`webapp.guards.check_model_name` with the visitor); returns the
    canonical name, recorded as one of the visitor's models for their status line."""
    canonical = check_model_name(name, visitor)
    _remember(visitor, canonical)
    return canonical


def _remember(visitor: Visitor | None, name: str) -> None:
    if visitor is None or name in _shared_models():
        return
    models = [m for m in visitor.models if m != name] + [name]
    visitor.models = models[-VISITOR_MODELS_SHOWN:]


def _forget_old_states(now: float) -> None:
    """Keep the loading states bounded: failures older than FAILURE_SHOWN_S go, then the
    oldest names beyond MAX_TRACKED (never one that is loading)."""
    for name, state in list(_model_state.items()):
        if state == "failed" and now - _failed_at.get(name, now) >= FAILURE_SHOWN_S:
            _model_state.pop(name, None)
            _failed_at.pop(name, None)
    for name in list(_model_state)[: max(0, len(_model_state) - MAX_TRACKED)]:
        if _model_state.get(name) != "loading":
            _model_state.pop(name, None)
            _failed_at.pop(name, None)
    with _locks_guard:
        for name in list(_model_locks):
            if name not in _model_state and not _model_locks[name].locked():
                del _model_locks[name]


def get_encoder(name: str, *, public: bool = True, visitor: Visitor | None = None):
    """The encoder for a model id or folder, loaded on first use and cached (LRU, by its
    canonical name: a folder typed as ``x``, ``x/`` or ``x/./`` is one model).

    Args:
        name: a model id or a sentence-transformers folder.
        public: a name from the page: checked by :func:`webapp.guards.check_model_name` (a
            typed path must lie inside the allowed model folders) and its loading state kept
            for the status line. False for a visitor's own student, a folder the server chose
            and whose name is nobody else's business.
        visitor: whose page asks (their own folders are allowed, and the model joins their
            status line); None for the server's own loads.

    Raises:
        ValueError: the model cannot be loaded (the message says why).
    """
    name = (name or "").strip()
    if not name:
        raise ValueError("no model chosen; pick a teacher and a student at the top of the page")
    if public:  # a name from the page: a backstop for any tab that forgot to check it
        if visitor is not None:
            name = checked_model(name, visitor)
        else:
            name = check_model_name(name, also_under=(settings.WORK_ROOT,))
    else:
        name = canonical_model_name(name)
    _forget_old_states(time.monotonic())
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
                _failed_at[name] = time.monotonic()
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
    return _encode_cached(canonical_model_name(name), tuple(sentences), public)


def cut_sentences(
    name: str, sentences: list[str], *, public: bool = True, visitor: Visitor | None = None
) -> tuple[int, list[int]]:
    """(the model's token limit, the 1-based numbers of the sentences longer than it): the
    model embeds only the start of those."""
    encoder = get_encoder((name or "").strip(), public=public, visitor=visitor)
    counts = encoder.token_counts(list(sentences))
    return encoder.max_seq_length, [
        i + 1 for i, n in enumerate(counts) if n > encoder.max_seq_length
    ]


def model_vectors(
    sentences: list[str], teacher: str, student: str, visitor: Visitor | None, which=None
) -> dict:
    """label -> vectors of the sentences by the teacher, the untrained student, the pre-built
    student (:mod:`webapp.prebuilt`, when the teacher is its own) and the visitor's own
    distilled student (if they have one), in that order."""
    which = which or list(MODEL_LABELS)
    teacher = checked_model(teacher, visitor) if "teacher" in which else teacher
    student = checked_model(student, visitor) if "untrained" in which else student
    vectors = {}
    if "teacher" in which:
        vectors[MODEL_LABELS["teacher"]] = encode(teacher, sentences)
    if "untrained" in which:
        vectors[MODEL_LABELS["untrained"]] = encode(student, sentences)
    prebuilt = prebuilt_for(teacher) if "prebuilt" in which else None
    if prebuilt:  # shipped with the app, in this teacher's space
        vectors[MODEL_LABELS["prebuilt"]] = encode(prebuilt, sentences, public=False)
    if "distilled" in which and visitor is not None and visitor.student_dir:
        if not Path(visitor.student_dir).is_dir():
            raise ValueError("your distilled student has expired; run the Distill tab again")
        vectors[MODEL_LABELS["distilled"]] = encode(visitor.student_dir, sentences, public=False)
    return vectors


def _warm_models(names: list[str]) -> None:
    for name in names:
        try:
            get_encoder(name)
        except Exception as err:  # shown in the status line; the page keeps working
            log.warning("could not preload %s: %s", name, err)
    prebuilt = prebuilt_for(DEFAULT_TEACHER) if DEFAULT_TEACHER in names else None
    if prebuilt:  # the first page draws it: load it with the defaults, before anyone asks
        try:
            get_encoder(prebuilt, public=False)
        except Exception as err:
            log.warning("could not preload the pre-built student: %s", err)
    # Then, the page already served on PyTorch, each shared model's fast path.
    for name in [*names, *([prebuilt] if prebuilt else [])]:
        _take_fast_path(canonical_model_name(name))


fast_paths: dict[str, str] = {}
"""Shared model -> the path it encodes with (``kd.models.fast``): for the status and tests."""


def _take_fast_path(name: str) -> None:
    """Swap a loaded shared model for its fast path (``settings.FAST_PATH``: measured once per
    model and CPU, cached on disk), where that is not PyTorch and its graph fits the budget."""
    from kd.models.encoder import Encoder

    encoder = _load_encoder.peek(name)
    if settings.FAST_PATH == "torch" or not isinstance(encoder, Encoder):
        return
    try:
        from kd.models.fast import fast_encoder

        faster, choice = fast_encoder(encoder, settings.FAST_PATH)
    except Exception as err:  # the page keeps PyTorch; said in the log
        log.warning("no fast path for %s: %s", name, err)
        return
    fast_paths[name] = choice.path
    if faster is encoder:
        log.info("fast path for %s: %s", name, choice.describe())
        return
    if _load_encoder.upgrade(name, faster, faster.path.stat().st_size):
        log.info("fast path for %s: %s", name, choice.describe())
    else:
        fast_paths[name] = "torch-fp32"
        log.info("fast path for %s: no room for its graph in the model budget", name)


def start_background_warm_up(models: list[str] | None = None) -> None:
    """Compile UMAP and load the default models in background threads (called at launch)."""
    from viz.project import warm_up_in_background

    _warm_up_started.set()
    warm_up_in_background()
    names = models if models is not None else [DEFAULT_TEACHER, DEFAULT_STUDENT]
    _preloaded[:] = names
    threading.Thread(target=_warm_models, args=(names,), name="kd-preload", daemon=True).start()


def training_started() -> None:
    """Count a training in the status line (:func:`training_finished` when it ends)."""
    with _trainings_lock:
        _trainings["running"] += 1


def training_finished() -> None:
    with _trainings_lock:
        _trainings["running"] -= 1


_preloaded: list[str] = []  # the ids start_background_warm_up was given


def _shared_models() -> list[str]:
    """The models every visitor's status line names: the dropdowns' defaults, the preloaded."""
    return list(dict.fromkeys([*settings.TEACHER_CHOICES, *settings.STUDENT_CHOICES, *_preloaded]))


def server_status(visitor: Visitor | None = None) -> str:
    """One status line: the shared models and this visitor's own (loaded, loading, failed a
    moment ago), whether UMAP is compiled, trainings running. Other visitors' model names
    never appear in it."""
    from viz.project import is_warm

    marks = {"ready": "ready", "loading": "loading…", "failed": "failed to load"}
    now = time.monotonic()
    own = list(visitor.models) if visitor is not None else []
    shown = {}
    for name in dict.fromkeys([*_shared_models(), *own]):
        state = _model_state.get(name)
        if state is None or (
            state == "failed" and now - _failed_at.get(name, now) >= FAILURE_SHOWN_S
        ):
            continue
        shown[name] = state
    models = (
        ", ".join(f"`{name.rsplit('/', 1)[-1]}` {marks[state]}" for name, state in shown.items())
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
    if visitor is not None and visitor.queued:
        training += " · yours starting…"  # accepted, not yet at its first phase
    return f"**Status** · models: {models} · UMAP: {umap} · training: {training}"


def status_tick(visitor: Visitor | None = None):
    busy = not all_ready() or _trainings["running"] > 0
    return server_status(visitor), gr.Timer(value=2 if busy else 15)


def all_ready() -> bool:
    from viz.project import is_warm

    return is_warm() and all(state != "loading" for state in _model_state.values())
