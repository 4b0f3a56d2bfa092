"""The app's fixed settings: files, default models and the limits that keep one visitor
from taking a 2-core server for long."""

from __future__ import annotations

import tempfile
from pathlib import Path

from kd.registry import DEFAULT_STUDENT, DEFAULT_TEACHER, MPNET, installed

ROOT = Path(__file__).resolve().parent.parent  # the repository
ASSETS = ROOT / "assets"
PAIRS_DIR = ASSETS / "pairs"
COMPARE_FILE = ASSETS / "compare_sentences.tsv"
LEARN_FILE = ASSETS / "learn.md"
SEARCH_COLLECTION = ASSETS / "search_collection.tsv"
SEARCH_QUERIES = ASSETS / "search_queries.tsv"
WORK_ROOT = Path(tempfile.gettempdir()) / "kd-app"

# The offline ids the dropdowns offer; kd.registry owns them (and imports no torch). An optional
# teacher is offered only where its package is installed: a visitor cannot pip install it.
TEACHER_CHOICES = [DEFAULT_TEACHER] + [m for m in (MPNET,) if installed(m)]
STUDENT_CHOICES = [DEFAULT_STUDENT]

# Limits that keep one visitor from taking a 2-core server for long.
MAX_TEXT_CHARS = 20_000
MAX_LINES = 40
MAX_LINE_CHARS = 1_000
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_POINTS = 2_000  # sentences per model in one aligned-space picture
MAX_LANGS = 24
MIN_PAIRS_SHOWN = 200  # languages with fewer gettext pairs are not offered
VISITOR_TTL_S = 4 * 3600
MODEL_CACHE_SIZE = 6
UPLOAD_SUFFIXES = (".tsv", ".txt", ".jsonl", ".json")
# A student zip the Distill tab offered, brought back: the default student is ~470 MB of
# float32 weights, stored uncompressed. This is also the server's cap on any upload; the text
# uploads above are refused by the handlers past MAX_UPLOAD_BYTES.
MAX_STUDENT_ZIP_BYTES = 600 * 1024 * 1024
MAX_STUDENT_UNZIPPED_BYTES = 1024 * 1024 * 1024
MAX_STUDENT_ZIP_MEMBERS = 64

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
    "distilled": "student, distilled",
}
SOURCES = ("built-in sentences", "Tatoeba directory", "uploaded file")
