"""``kd plot``: embed Tatoeba sentences with teacher, untrained and distilled student, draw them.

This is glue between the core (encoders) and ``viz/`` (projections, figures); it lives in kd/
because only the command line calls it, and it imports viz lazily so the core stays free of
plotting dependencies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kd.langs import parse_langs


def plot_run(
    model: str,
    tatoeba: str,
    langs: str | list[str],
    n: int = 100,
    method: str = "umap",
    out: str = "figures",
    png: bool = False,
    device: str = "auto",
) -> list[Path]:
    """Write the aligned-space scatter, accuracy bars and (if logged) training curves.

    Example:
        >>> plot_run("student", "../shared/data/tatoeba-dev", "de,fr", out="figs")  # doctest: +SKIP
    """
    import pandas as pd

    from kd.data import read_tatoeba
    from kd.evaluate import evaluate
    from kd.models import DEFAULT_TEACHER, Encoder, pick_device, prepare_torch, resolve_model
    from viz.figures import accuracy_bars, aligned_scatter, training_curves
    from viz.metrics import projection_trustworthiness, translation_cosine
    from viz.plot_cli import write_figures
    from viz.project import project_frame

    if n < 1:
        raise ValueError("--n must be at least 1")
    device = pick_device(device)
    prepare_torch(device)
    langs = parse_langs(langs)
    run_dir = Path(resolve_model(model))
    run_cfg = {}
    if (run_dir / "kd_config.json").exists():
        run_cfg = json.loads((run_dir / "kd_config.json").read_text(encoding="utf-8"))
    pairs = read_tatoeba(tatoeba, langs)

    sentences, row_langs, pair_ids = [], [], []
    for lang in langs:
        for p in pairs[lang][:n]:
            pid = len(pair_ids)
            sentences += [p.en, p.other]
            row_langs += ["en", lang]
            pair_ids += [pid, pid]
    models = {"teacher": Encoder.load(run_cfg.get("teacher", DEFAULT_TEACHER), device)}
    if run_cfg.get("student"):
        models["student (untrained)"] = Encoder.load(run_cfg["student"], device)
    models["student (distilled)"] = Encoder.load(model, device)
    # One fit over the models that live in the teacher's space: the untrained student has a
    # space of its own (same width, unrelated axes), which would only add a distant island.
    vectors = {name: models[name].encode(sentences) for name in ("teacher", "student (distilled)")}
    frame = project_frame(vectors, row_langs, sentences, pair_ids, method=method)
    cos = translation_cosine(vectors, row_langs, pair_ids)
    stacked = np.vstack(list(vectors.values()))
    trust = projection_trustworthiness(stacked, frame[["x", "y"]].to_numpy())
    title = (
        "translation cosine (original space): "
        + ", ".join(f"{k} {v:.2f}" for k, v in cos.items())
        + f" · trustworthiness {trust:.2f}"
    )
    figs = {"aligned_space": aligned_scatter(frame, title=title)}

    sets = {
        lang: ([p.en for p in pairs[lang][:n]], [p.other for p in pairs[lang][:n]])
        for lang in langs
    }
    teacher_en = {lang: models["teacher"].encode(en) for lang, (en, _x) in sets.items()}
    rows = []
    for name, enc in models.items():
        res = evaluate(sets, teacher_en, enc.encode)
        key = (
            "cross_mean_accuracy"
            if "cross_mean_accuracy" in res["mean"]
            else "student_mean_accuracy"
        )
        rows += [
            {"lang": lang, "model": name, "accuracy": res[lang].get(key, np.nan)} for lang in langs
        ]
    figs["accuracy"] = accuracy_bars(
        pd.DataFrame(rows),
        title=f"retrieval into the teacher's space, student(x) → teacher(en), among {n} pairs",
    )
    history = run_dir / "history.json"
    if history.exists():
        figs["training"] = training_curves(pd.DataFrame(json.loads(history.read_text())))
    return write_figures(figs, out, png=png)
