"""The pre-built student: a distilled student shipped with the app, on screen from the first page.

A visitor on a free CPU Space can afford a minute or two of training, which gives a weak
student; a class demo needs the good one at once, and the visitor's own run as the experiment
beside it. ``assets/prebuilt-student`` holds one, stored as a delta over the packaged
multilingual-e5-small (:mod:`kd.models.delta`), with its run's metrics and its dev-set scores
(``eval_tatoeba.json``). Every tab shows it as :data:`webapp.settings.MODEL_LABELS`'s
``prebuilt`` beside the teacher, the untrained student and the visitor's own student, whenever
the page's teacher is the one it learnt from (its vectors live in that teacher's space).

``KD_PREBUILT`` names another folder; set to an empty string it turns the pre-built student off.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from kd.models.registry import prebuilt_dir


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime: float) -> dict:
    folder = Path(path)
    info: dict = {}
    for name in ("kd_config.json", "metrics.json", "eval_tatoeba.json"):
        try:
            info[name] = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info[name] = {}
    return info


def _info() -> dict:
    path = prebuilt_dir()
    if path is None:
        return {}
    try:
        mtime = (path / "kd_config.json").stat().st_mtime
    except OSError:
        mtime = 0.0
    return _read(str(path), mtime)


def prebuilt_teacher() -> str | None:
    """The teacher the pre-built student learnt from (its ``kd_config.json``)."""
    return _info().get("kd_config.json", {}).get("teacher")


def prebuilt_for(teacher: str | None) -> str | None:
    """The pre-built student's folder when ``teacher`` is the one it learnt from, else None."""
    from webapp.guards import canonical_model_name

    path, own = prebuilt_dir(), prebuilt_teacher()
    if path is None or not own or not teacher:
        return None
    return str(path) if canonical_model_name(teacher) == canonical_model_name(own) else None


def prebuilt_numbers() -> dict[str, float]:
    """Its dev-set (Tatoeba) means, beside the untrained student's: the numbers the page shows."""
    results = _info().get("eval_tatoeba.json", {}).get("results", {})
    out = {}
    for stage, prefix in (("student_distilled", ""), ("student_untrained", "untrained ")):
        mean = results.get(stage, {}).get("mean", {})
        for key, name in (
            ("cross_mean_accuracy", "cross-model retrieval"),
            ("english_fidelity", "English fidelity"),
            ("student_mean_accuracy", "own retrieval"),
        ):
            if key in mean:
                out[prefix + name] = float(mean[key])
    return out


def prebuilt_note() -> str:
    """One Markdown line on the pre-built student and its measured numbers ("" if none)."""
    from webapp.settings import MODEL_LABELS

    if prebuilt_dir() is None:
        return ""
    info = _info()
    cfg = info.get("kd_config.json", {})
    n = prebuilt_numbers()
    langs = cfg.get("langs") or []
    parts = [
        f"*{MODEL_LABELS['prebuilt']}*: a distilled student shipped with the app, from "
        f"`{cfg.get('teacher', '?')}` into `{cfg.get('student', '?')}` on everyday pairs in "
        f"{len(langs)} languages"
    ]
    if "cross-model retrieval" in n:
        parts.append(
            "on the Tatoeba dev set it finds a translation's English sentence in the teacher's "
            f"space {n['cross-model retrieval']:.1%} of the time (untrained: "
            f"{n.get('untrained cross-model retrieval', 0):.1%}), English fidelity "
            f"{n.get('English fidelity', 0):.2f}, own retrieval {n.get('own retrieval', 0):.2f} "
            f"(untrained {n.get('untrained own retrieval', 0):.2f})"
        )
    return "; ".join(parts) + "."


__all__ = ["prebuilt_dir", "prebuilt_for", "prebuilt_note", "prebuilt_numbers", "prebuilt_teacher"]
