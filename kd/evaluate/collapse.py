"""Collapse and regression alarms: did the student's space shrink to a point, did it get worse?

**Collapse.** A student that maps every sentence to nearly one direction can still bring its
loss down (every translation lands near every teacher vector), yet it retrieves nothing. Its
sign is the mean cosine of *unrelated* sentences (:func:`kd.evaluate.metrics.unrelated_cosine`:
each held-out English sentence with every other one) climbing toward 1. Models differ in how
far apart they keep unrelated sentences: multilingual-e5 is anisotropic (its unrelated
sentences sit at a high cosine, docs/training.md has the numbers), the English teacher keeps
them far apart. So the alarm is relative: the *spread* of a space is ``1 - unrelated_cosine``,
the reference is the smaller spread of the teacher and the untrained student (the more
anisotropic of the two spaces the student starts from or is pulled toward), and the alarm rings
when the student's spread falls below :data:`COLLAPSE_FRACTION` of it. A student whose spread
halves compared with both the model it started as and the model it imitates has lost half of
the room its sentences had.

**Regression.** After a run, each summary measure of the distilled student is compared with
the untrained student's on the same pairs: ``better``, ``same`` (within :data:`TOLERANCE`) or
``worse``, so that a student that got worse is never taken home unannounced.

No torch here: everything reads the flat metric dicts of :mod:`kd.evaluate.metrics` and
:mod:`kd.evaluate.sts`.
"""

from __future__ import annotations

COLLAPSE_FRACTION = 0.5
"""The alarm rings when the student's spread (1 - unrelated cosine) is below this fraction of
the reference spread."""

MEASURES: dict[str, tuple[str, bool]] = {
    "cross_mean_accuracy": ("cross-model retrieval", True),
    "student_mean_accuracy": ("own retrieval", True),
    "english_fidelity": ("English fidelity", True),
    "mse_x100": ("MSE x100", False),
    "sts_mono": ("STS same language", True),
    "sts_cross": ("STS English to x", True),
}
"""Measure -> (label, higher is better). ``sts_*``: the mean over languages other than English
of :func:`kd.evaluate.sts.sts_report`; the rest: the held-out pairs' mean over languages."""

TOLERANCE: dict[str, tuple[float, str]] = {
    "cross_mean_accuracy": (0.01, "abs"),
    "student_mean_accuracy": (0.01, "abs"),
    "english_fidelity": (0.01, "abs"),
    "mse_x100": (0.05, "rel"),
    "sts_mono": (1.0, "abs"),
    "sts_cross": (1.0, "abs"),
}
"""How far two values may differ and still be ``same``: accuracies and fidelity by 0.01 (one
point; a mean over languages of a few hundred pairs each moves by about that between seeds),
MSE by 5% of the untrained value, STS by 1 point of Spearman x 100."""


def collapse_threshold(teacher: float | None, untrained: float | None) -> float | None:
    """The unrelated cosine above which a student counts as collapsing, from the teacher's and
    the untrained student's own values (None when neither was measured).

    Example:
        >>> round(collapse_threshold(0.1, 0.8), 3)  # spread 0.2 at best: alarm below 0.1
        0.9
    """
    known = [v for v in (teacher, untrained) if v is not None]
    if not known:
        return None
    reference = max(known)  # the smaller spread: the more anisotropic model
    return reference + (1.0 - reference) * (1.0 - COLLAPSE_FRACTION)


def reference_values(metrics: dict) -> dict[str, float]:
    """The teacher's and the untrained student's mean unrelated cosine, where measured."""
    out = {}
    for stage in ("teacher", "student_untrained"):
        value = metrics.get(stage, {}).get("mean", {}).get("unrelated_cosine")
        if value is not None:
            out[stage] = float(value)
    return out


def collapse_check(value: float | None, references: dict[str, float]) -> dict:
    """The alarm's verdict on one measured unrelated cosine: ``{"unrelated_cosine", "threshold",
    "alarm"}`` (``alarm`` False when the value or the references are missing).

    Example:
        >>> collapse_check(0.97, {"teacher": 0.1, "student_untrained": 0.8})["alarm"]
        True
    """
    threshold = collapse_threshold(references.get("teacher"), references.get("student_untrained"))
    alarm = value is not None and threshold is not None and value > threshold
    return {"unrelated_cosine": value, "threshold": threshold, "alarm": bool(alarm)}


def collapse_warning(check: dict, when: str = "") -> str:
    """The one line that tells a user the student's space is collapsing ("" when it is not).

    Example:
        >>> collapse_warning({"unrelated_cosine": 0.97, "threshold": 0.9, "alarm": True})[:26]
        'WARNING: the student space'
    """
    if not check.get("alarm"):
        return ""
    at = f" {when}" if when else ""
    return (
        f"WARNING: the student space is collapsing{at}: unrelated sentences have mean cosine "
        f"{check['unrelated_cosine']:.3f}, above the alarm at {check['threshold']:.3f} (half "
        "the spread of the teacher and of the untrained student); every sentence is moving "
        "toward one point. Lower the learning rate or check the data."
    )


def summary_values(metrics: dict, stage: str) -> dict[str, float]:
    """The measures of :data:`MEASURES` one model ``stage`` has in a run's (or report's)
    metrics: the held-out mean over languages and the STS means."""
    out = {k: v for k, v in metrics.get(stage, {}).get("mean", {}).items() if k in MEASURES}
    sts_mean = (metrics.get("sts") or {}).get(stage, {}).get("mean", {})
    for setting in ("mono", "cross"):
        if setting in sts_mean:
            out[f"sts_{setting}"] = sts_mean[setting]
    return out


def verdict(measure: str, value: float, baseline: float) -> str:
    """``better``, ``same`` or ``worse`` of ``value`` against ``baseline`` for ``measure``.

    Example:
        >>> verdict("mse_x100", 0.2, 0.4), verdict("student_mean_accuracy", 0.905, 0.9)
        ('better', 'same')
    """
    tol, kind = TOLERANCE[measure]
    margin = tol * abs(baseline) if kind == "rel" else tol
    diff = value - baseline
    if abs(diff) <= margin:
        return "same"
    higher_better = MEASURES[measure][1]
    return "better" if (diff > 0) == higher_better else "worse"


def verdicts(metrics: dict, stage: str = "student_distilled", base: str = "student_untrained"):
    """Every measure both ``stage`` and ``base`` have: ``{measure: {"value", "baseline",
    "verdict"}}``.

    Example:
        >>> m = {"student_untrained": {"mean": {"student_mean_accuracy": 0.9}},
        ...      "student_distilled": {"mean": {"student_mean_accuracy": 0.7}}}
        >>> verdicts(m)["student_mean_accuracy"]["verdict"]
        'worse'
    """
    now, before = summary_values(metrics, stage), summary_values(metrics, base)
    return {
        k: {"value": now[k], "baseline": before[k], "verdict": verdict(k, now[k], before[k])}
        for k in MEASURES
        if k in now and k in before
    }


def format_verdicts(found: dict, against: str = "the untrained student") -> str:
    """One line per measure, and a warning line first when any measure got worse."""
    if not found:
        return ""
    worse = [MEASURES[k][0] for k, v in found.items() if v["verdict"] == "worse"]
    lines = []
    if worse:
        lines.append(f"WARNING: worse than {against} on: {', '.join(worse)}")
    lines.append(f"verdict against {against} (tolerance: docs/training.md):")
    for k, v in found.items():
        lines.append(
            f"  {MEASURES[k][0]:<24}{v['verdict']:<8}{v['value']:.3f} (was {v['baseline']:.3f})"
        )
    return "\n".join(lines)
