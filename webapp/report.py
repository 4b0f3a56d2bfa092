"""The Distill tab's report: ``kd report``'s page for the visitor's own student, as a download.

The page is :mod:`kd.evaluate.report`'s. Its cost is capped by :data:`webapp.settings.REPORT_PAIRS`
Tatoeba dev pairs a language (the run's languages that the dev folder has) and
:data:`webapp.settings.REPORT_STS_PAIRS` STS pairs a language, each encoded by the teacher, the
untrained student and the visitor's student. Where the server has no dev folder (or
``KD_REPORT_PAIRS=0``), the page is built from the run's own held-out measurements: no model runs.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from kd.data.dataset import tatoeba_sets
from kd.evaluate.report import build_results, results_from_run, write_report
from kd.evaluate.sts import read_sts
from kd.langs import parse_langs
from webapp import settings
from webapp.model_cache import get_encoder
from webapp.session import Visitor, user_error

log = logging.getLogger("kd.app")

# One report measured at a time: three models' passes over a few thousand sentences.
_report_slot = threading.Lock()


def _dev_sets(langs: list[str]) -> tuple[dict, dict]:
    """The capped Tatoeba dev pairs and STS sets of ``langs`` this server has (empty: none)."""
    if settings.REPORT_PAIRS <= 0 or not settings.REPORT_TATOEBA.is_dir():
        return {}, {}
    sets: dict = {}
    for lang in langs:
        try:
            sets |= tatoeba_sets(settings.REPORT_TATOEBA, [lang], settings.REPORT_PAIRS)
        except ValueError:
            continue  # a language of the run that the dev set lacks
    sts: dict = {}
    if sets and settings.REPORT_STS_PAIRS > 0 and settings.REPORT_STS.is_dir():
        for lang in sets:
            try:
                sts |= read_sts(settings.REPORT_STS, [lang], max_rows=settings.REPORT_STS_PAIRS)
            except ValueError:
                continue  # a language the STS set lacks (ar, tr): the rest keep their STS
    return sets, sts


def student_report(visitor: Visitor | None) -> str:
    """Write the report page of the visitor's student into their folder; returns its path.

    Raises:
        gr.Error: no student yet, or the report could not be made (the message says why).
    """
    if visitor is None or not visitor.student_dir or not visitor.metrics:
        raise user_error("distill a student first: the report describes your own student")
    metrics = visitor.metrics
    config = metrics.get("config", {})
    try:
        langs = parse_langs(config.get("langs") or [])
    except ValueError:
        langs = []
    out = Path(visitor.student_dir).parent / f"report-{Path(visitor.student_dir).name}.html"
    started = time.perf_counter()
    try:
        sets, sts = _dev_sets(langs)
        if not sets:
            results = results_from_run(metrics, "your student", "the run's own held-out pairs")
        else:
            if not _report_slot.acquire(timeout=1):
                raise ValueError("another report is being measured; try again in a minute")
            try:
                results = _measure(visitor, config, sets, sts)
            finally:
                _report_slot.release()
        results["seconds"] = round(time.perf_counter() - started, 1)
        write_report(results, out)
    except ValueError as err:
        raise user_error(err) from None
    return str(out)


def _measure(visitor: Visitor, config: dict, sets: dict, sts: dict) -> dict:
    teacher_id = visitor.teacher or config.get("teacher")
    base_id = config.get("student")
    if not teacher_id or not base_id:
        raise ValueError("this run does not name its teacher and student; run it again")
    teacher = get_encoder(teacher_id, public=False)
    models = {
        "student_untrained": lambda: get_encoder(base_id, public=False).encode,
        "model": lambda: get_encoder(visitor.student_dir, public=False).encode,
    }
    ids = {"teacher": teacher_id, "student_untrained": base_id, "model": "your student"}
    n = settings.REPORT_PAIRS
    source = f"Tatoeba dev, at most {n} pairs a language (this server's cap)"
    return build_results(sets, sts, teacher.encode, models, ids, source)
