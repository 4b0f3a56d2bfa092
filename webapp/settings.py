"""The app's fixed settings: files, default models and the limits that keep one visitor
from taking a 2-core server for long."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kd.models.registry import DEFAULT_STUDENT, DEFAULT_TEACHER, MPNET, installed, is_static


def _env_number(name: str, default: float) -> float:
    """A number from the environment, or ``default`` when unset or unreadable."""
    try:
        value = float(os.environ.get(name, "").strip() or default)
    except ValueError:
        return default
    return value if value >= 0 else default


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in {"1", "on", "yes", "true"}


ROOT = Path(__file__).resolve().parent.parent  # the repository
ASSETS = ROOT / "assets"
PAIRS_DIR = ASSETS / "pairs"
COMPARE_FILE = ASSETS / "compare_sentences.tsv"
LEARN_FILE = ASSETS / "learn.md"
SEARCH_COLLECTION = ASSETS / "search_collection.tsv"
SEARCH_QUERIES = ASSETS / "search_queries.tsv"
WORK_ROOT = Path(tempfile.gettempdir()) / "kd-app"

# The offline ids the dropdowns offer; kd.models.registry owns them (and imports no torch). An
# optional teacher is offered only where its package is installed: a visitor cannot pip install it.
TEACHER_CHOICES = [DEFAULT_TEACHER] + [m for m in (MPNET,) if installed(m)]

STATIC_ENV = "KD_STATIC"
"""Static students (``kd export --static``) the student list offers, to compare and search with
(``os.pathsep``-separated folders); each folder is also one a typed model may lie in."""


def static_choices() -> list[str]:
    """The static folders ``$KD_STATIC`` names, those that are static models (read without
    loading them), as absolute paths."""
    found = []
    for item in os.environ.get(STATIC_ENV, "").split(os.pathsep):
        path = Path(item.strip()).expanduser()
        if item.strip() and is_static(path):
            found.append(str(path.resolve()))
    return found


STUDENT_CHOICES = [DEFAULT_STUDENT, *static_choices()]

# Limits that keep one visitor from taking a 2-core server for long.
MAX_TEXT_CHARS = 20_000
MAX_LINES = 40
MAX_LINE_CHARS = 1_000
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_POINTS = 2_000  # sentences per model in one aligned-space picture
MAX_LANGS = 24
MIN_PAIRS_SHOWN = 200  # languages with fewer gettext pairs are not offered
VISITOR_TTL_S = int(_env_number("KD_VISITOR_TTL_S", 4 * 3600))
MODEL_CACHE_SIZE = int(_env_number("KD_MODEL_CACHE", 6)) or 1
UPLOAD_SUFFIXES = (".tsv", ".txt", ".jsonl", ".json")
# A student zip the Distill tab offered, brought back: the app's runs save deltas (kd.models.delta),
# ~15 MB for the app's recipe and 22-44 MB for the long one, where the full student would be
# ~470 MB. This is also the server's cap on any upload; the text uploads above are refused by
# the handlers past MAX_UPLOAD_BYTES.
MAX_STUDENT_ZIP_BYTES = 50 * 1024 * 1024
MAX_STUDENT_UNZIPPED_BYTES = 64 * 1024 * 1024
MAX_STUDENT_ZIP_MEMBERS = 64


# ---- the public server's budget --------------------------------------------------------------
# Each limit below has an environment variable (docs/public-server.md); read at import.
MB = 1024 * 1024
# Everything the app writes for visitors (their runs, their uploads, gradio's copies of the zips
# it hands out) stays under this; the oldest runs of other visitors are deleted to make room.
DISK_BUDGET_BYTES = int(_env_number("KD_DISK_BUDGET_MB", 8 * 1024) * MB)
# Room made before each new run folder (a distillation, a student zip unpacked).
RUN_RESERVE_BYTES = int(_env_number("KD_RUN_RESERVE_MB", 1024) * MB)
# The upload route: one request at most the largest file the page takes (plus the form's
# framing); one client at most UPLOAD_QUOTA_BYTES an hour; all uploads no event has used yet at
# most UPLOAD_PENDING_BYTES; an upload no event has used is deleted after UPLOAD_UNUSED_S.
UPLOAD_QUOTA_BYTES = int(_env_number("KD_UPLOAD_QUOTA_MB", 1024) * MB)
UPLOAD_PENDING_BYTES = int(_env_number("KD_UPLOAD_PENDING_MB", 2 * 1024) * MB)
UPLOAD_UNUSED_S = _env_number("KD_UPLOAD_UNUSED_S", 15 * 60)
UPLOAD_FRAMING_BYTES = 64 * 1024
# Every other request's body (the API's JSON: 40 lines of Compare text is ~40 KB) at most this,
# stated up front in its Content-Length (webapp.upload_guard).
MAX_BODY_BYTES = int(_env_number("KD_MAX_BODY_KB", 1024) * 1024)
# Behind a proxy (Hugging Face Spaces), the visitor's address is the last X-Forwarded-For entry.
BEHIND_PROXY = _env_flag("KD_BEHIND_PROXY", default=bool(os.environ.get("SPACE_ID")))
# A distillation's wall-clock cap (from its start; the student so far is then evaluated and
# saved), and the caches' sizes (oldest files deleted first).
RUN_MINUTES = _env_number("KD_RUN_MINUTES", 10)
SEARCH_CACHE_BYTES = int(_env_number("KD_SEARCH_CACHE_MB", 256) * MB)
# The models kept loaded: their tensors together (measured: 87 MB for the default teacher, 449 MB
# for the default student, as much for the pre-built one and each visitor's brought back), the
# least recently used visitor's model dropped first (webapp.model_cache).
MODEL_CACHE_BYTES = int(_env_number("KD_MODEL_CACHE_MB", 2048) * MB)
# How the shared models (the default teacher and student, the pre-built student) encode once
# loaded (kd.models.fast): auto measures on this CPU, once per model (cached on disk), and swaps
# in the fastest path that keeps the vectors; its ONNX graph counts in MODEL_CACHE_BYTES.
FAST_PATH = os.environ.get("KD_FAST_PATH", "").strip().lower() or "auto"
if FAST_PATH not in ("auto", "torch", "onnx", "int8"):
    FAST_PATH = "auto"
TEACHER_CACHE_BYTES = int(_env_number("KD_TEACHER_CACHE_MB", 512) * MB)
# Models from the Hugging Face Hub: off on a public server unless turned on, and then only
# repositories up to HUB_MAX_BYTES.
HUB_MODELS = _env_flag("KD_HUB_MODELS")
HUB_MAX_BYTES = int(_env_number("KD_HUB_MAX_MB", 1024) * MB)
HUB_PROBE_S = 1.0  # how long the Hub may take to answer before it counts as unreachable
# Draw's cost: sentences a model under each projection (UMAP costs far more a point than PCA:
# 2,000 points took 325 s of CPU).
MAX_POINTS_BY_METHOD = {"pca": MAX_POINTS, "umap": int(_env_number("KD_MAX_UMAP_POINTS", 500))}
# ... and the characters one Draw encodes, all its sentences together: encoding dominates a cold
# Draw, and it grows with the text, not the count (500 sentences a language of ~90 words in three
# languages took 429 s of CPU). 2,000 Tatoeba sentences are ~65,000 characters (32 a sentence
# in ../shared/data/tatoeba-dev); the built-in ones 35 a sentence.
DRAW_MAX_CHARS = int(_env_number("KD_DRAW_MAX_CHARS", 80_000))
# Analyse's cost (webapp.analyse): the held-out pairs one click reads, all languages together
# (each model encodes both sides once: 1,000 pairs are 2,000 sentences a model, Draw's PCA cap),
# and their characters (encoding dominates; the retrieval and the mixed pool are matrix products
# of at most 1,000 x 2,000).
ANALYSE_MAX_PAIRS = int(_env_number("KD_ANALYSE_MAX_PAIRS", 1_000))
ANALYSE_MAX_CHARS = int(_env_number("KD_ANALYSE_MAX_CHARS", 80_000))

# The Distill tab's report on the visitor's student (kd.evaluate.report): its cost is at most
# REPORT_PAIRS Tatoeba dev pairs a language of the run's languages and REPORT_STS_PAIRS STS pairs
# a language, each encoded by the teacher, the untrained student and the visitor's student
# (docs/report.md has the measured time). Where the server has no dev folder the page is built
# from the run's own held-out measurements, which costs no model pass.
REPORT_PAIRS = int(_env_number("KD_REPORT_PAIRS", 100))
REPORT_STS_PAIRS = int(_env_number("KD_REPORT_STS_PAIRS", 100))
REPORT_TATOEBA = Path(
    os.environ.get("KD_REPORT_TATOEBA", "") or ROOT.parent / "shared" / "data" / "tatoeba-dev"
)
REPORT_STS = Path(
    os.environ.get("KD_REPORT_STS", "") or ROOT.parent / "shared" / "data" / "stsb-multi-dev"
)
# Mine's cost: sentences a list and characters in both lists together, embedded by one model
# (the margin's nearest-neighbour search over 1,000 x 1,000 vectors is milliseconds beside it).
MINE_MAX_LINES = int(_env_number("KD_MINE_MAX_LINES", 1_000)) or 1
MINE_MAX_CHARS = int(_env_number("KD_MINE_MAX_CHARS", 60_000)) or 1

# Server folders a visitor may name: models (besides kd's cache and the visitor's own student)
# and data (Tatoeba folders), each env var a list separated by os.pathsep (":" on Linux).
MODEL_DIRS_ENV = "KD_MODEL_DIRS"
DATA_DIRS_ENV = "KD_DATA_DIRS"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Result tables: a narrow column's header stays whole ("rank", not "ra / nk" letter by letter);
# a table too wide for its column scrolls sideways instead.
PAGE_CSS = """
.gradio-container table th, .gradio-container table th * {
  word-break: normal !important;
  overflow-wrap: normal !important;
  white-space: nowrap !important;
}
"""

MODEL_LABELS = {
    "teacher": "teacher",
    "untrained": "student, untrained",
    "prebuilt": "student, pre-built",  # distilled before the visitor came (webapp.prebuilt)
    "distilled": "student, distilled",  # the visitor's own run
}
SOURCES = ("built-in sentences", "Tatoeba directory", "uploaded file")
