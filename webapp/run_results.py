"""What a finished (or running) distillation shows: the loss and accuracy curve, the
before/after table, the per-language bars.

Every function here reads the run's ``metrics`` (``kd.train.run.DistillResult.metrics``) or its
step records; none runs a model.
"""

from __future__ import annotations


def curve(history: list[dict], accuracy: list[dict], references: dict | None = None):
    """Loss by step, held-out accuracy by step and language, and the baselines as lines."""
    import pandas as pd

    from viz.figures import training_curves

    hist = pd.DataFrame(history, columns=["step", "loss"])
    acc = pd.DataFrame(accuracy, columns=["step", "lang", "accuracy"]) if accuracy else None
    smooth = max(5, len(hist) // 20)  # one batch's loss is noise; its trend is the story
    return training_curves(hist, acc, references, title="distillation", smooth=smooth)


def headline(metrics: dict) -> str:
    """The metric the page plots and quotes (:func:`kd.evaluate.metrics.headline_metric`)."""
    from kd.evaluate.metrics import headline_metric

    return headline_metric(metrics)


STAGES = {"teacher": "teacher", "student_untrained": "student, untrained"}
STAGES["student_head"] = "student, step 0 (head only)"
STAGES["student_distilled"] = "student, distilled"
RESULT_COLUMNS = {
    "cross_mean_accuracy": "cross-model retrieval",
    "student_mean_accuracy": "own retrieval",
    "english_fidelity": "English fidelity",
    "mse_x100": "MSE×100",
}
STS_COLUMNS = {"mono": "STS same language ρ×100", "cross": "STS en→x ρ×100"}


def results_table(metrics: dict):
    """Before/after table: one row per (language, model), the summary metrics as columns.

    When the run measured STS (``metrics["sts"]``, see :mod:`kd.evaluate.sts`), two more columns
    give each model's Spearman x 100 in that language (mean: over the languages other than English),
    and rows for English show the teacher's reference score.
    """
    import pandas as pd

    present = [stage for stage in STAGES if stage in metrics]
    langs = list(dict.fromkeys(lang for s in present for lang in metrics[s]))
    langs = ["mean"] + [lang for lang in langs if lang != "mean"] if "mean" in langs else langs
    sts = metrics.get("sts") or {}
    if "en" in sts.get("teacher", {}) and "en" not in langs:  # the reference: teacher on English
        langs.insert(1 if langs[:1] == ["mean"] else 0, "en")
    columns = {**RESULT_COLUMNS, **(STS_COLUMNS if sts else {})}
    rows = []
    for lang in langs:
        for stage in present:
            values = {**metrics[stage].get(lang, {}), **sts.get(stage, {}).get(lang, {})}
            row = {"language": lang, "model": STAGES[stage]}
            row |= {
                label: round(values[k], 3) if k in values else None for k, label in columns.items()
            }
            rows.append(row)
    return pd.DataFrame(rows, columns=["language", "model", *columns.values()])


def per_language_bars(metrics: dict):
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


def alarm_note(metrics: dict) -> str:
    """The run's collapse alarm and its verdicts against the untrained student, as Markdown
    (:mod:`kd.evaluate.collapse`): a bold warning first when the student collapsed or got
    worse on any measure, then one verdict per measure."""
    from kd.evaluate.collapse import MEASURES, collapse_warning

    lines = []
    collapse = metrics.get("collapse") or {}
    final = collapse.get("final") or {}
    if final.get("alarm"):
        lines.append(f"**{collapse_warning(final, 'after training')}**")
    elif collapse.get("alarm"):
        lines.append(
            "**WARNING: the collapse alarm rang during training** (unrelated sentences drew "
            "together); the final student is back under it."
        )
    found = metrics.get("verdicts") or {}
    worse = [MEASURES[k][0] for k, v in found.items() if v["verdict"] == "worse"]
    if worse:
        lines.append(f"**WARNING: worse than the untrained student on: {', '.join(worse)}.**")
    if found:
        said = ", ".join(f"{MEASURES[k][0]} {v['verdict']}" for k, v in found.items())
        lines.append(f"Against the untrained student: {said}.")
    return "\n\n".join(lines)
