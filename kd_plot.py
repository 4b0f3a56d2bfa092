"""``kd plot``: embed Tatoeba sentences with teacher, untrained and distilled student, draw them.

This is glue between the core (``kd/``: encoders, evaluation) and ``viz/`` (projections,
figures), so it lives in neither: ``kd/`` never imports viz and ``viz/`` never imports kd. Like
``app.py`` for the page, it is a front end; the command line (``kd.cli``) imports it only when
``kd plot`` runs, and it imports both sides only inside :func:`plot_run`, so that ``kd --help``
pays for neither torch nor plotly.
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
    animate: bool = False,
) -> tuple[list[Path], list[str]]:
    """Write the teacher's-space panel, the aligned-space scatter, accuracy bars and (if logged)
    training curves; with ``animate``, the run's journey into the teacher's space.

    The teacher's-space panel (``teacher_space.html``) draws the teacher's vectors of the
    English sentences as anchors and each translation, embedded by the untrained and by the
    distilled student (a slider between the two), joined to its anchor; its numbers are the
    mean line length in the original space, 1 - cos(student(x), teacher(en)), and retrieval
    into the teacher's space. ``animate`` writes ``journey.html``: the held-out translations the
    run watched (``watch.npz``, :mod:`kd.evaluate.watch`), one frame per evaluation.

    Returns:
        (the files written, lines of numbers to print).

    Example:
        >>> plot_run("student", "../shared/data/tatoeba-dev", "de,fr", out="figs")  # doctest: +SKIP
    """
    import pandas as pd

    from kd.data.dataset import tatoeba_sets
    from kd.evaluate.metrics import evaluate, headline_metric
    from kd.evaluate.watch import WatchSet
    from kd.models.encoder import (
        DEFAULT_TEACHER,
        Encoder,
        pick_device,
        prepare_torch,
        resolve_model,
    )
    from viz.figures import (
        accuracy_bars,
        aligned_scatter,
        teacher_space,
        teacher_space_animation,
        training_curves,
    )
    from viz.metrics import projection_trustworthiness, translation_cosine
    from viz.panels import teacher_space_panel
    from viz.plot_cli import write_figures
    from viz.project import project_frame, teacher_space_journey

    if n < 1:
        raise ValueError("--n must be at least 1")
    device = pick_device(device)
    prepare_torch(device)
    langs = parse_langs(langs)
    run_dir = Path(resolve_model(model))
    watch = WatchSet.load(run_dir) if animate else None
    if animate and (watch is None or not watch.frames):
        raise ValueError(
            f"{model} kept no watch set (watch.npz): distil it with this version of kd and "
            "--eval-pairs above 0, or drop --animate"
        )
    run_cfg = {}
    if (run_dir / "kd_config.json").exists():
        run_cfg = json.loads((run_dir / "kd_config.json").read_text(encoding="utf-8"))
    sets = tatoeba_sets(tatoeba, langs, n)

    sentences, row_langs, pair_ids = [], [], []
    for lang, (english, translations) in sets.items():
        for en, x in zip(english, translations, strict=True):
            pid = len(pair_ids)
            sentences += [en, x]
            row_langs += ["en", lang]
            pair_ids += [pid, pid]
    models = {"teacher": Encoder.load(run_cfg.get("teacher", DEFAULT_TEACHER), device)}
    if run_cfg.get("student"):
        models["student (untrained)"] = Encoder.load(run_cfg["student"], device)
    models["student (distilled)"] = Encoder.load(model, device)
    vectors = {name: enc.encode(sentences) for name, enc in models.items()}

    # The teacher's space: anchors = teacher(en), students' translations joined to them.
    en_rows = np.arange(0, len(sentences), 2)
    x_rows = en_rows + 1
    anchors = vectors["teacher"][en_rows]
    ids = np.arange(len(en_rows))
    frames = {
        name.removeprefix("student (").removesuffix(")"): v[x_rows]
        for name, v in vectors.items()
        if name != "teacher" and v.shape[1] == anchors.shape[1]
    }
    space_title = "the teacher's space: teacher(en) ◆ and each translation by the student"
    panel = teacher_space_panel(
        anchors,
        frames,
        [row_langs[i] for i in x_rows],
        [sentences[i] for i in x_rows],
        ids,
        method,
        en_sentences=[sentences[i] for i in en_rows],
        title=space_title,
    )
    numbers = panel.numbers
    lines = [
        f"teacher's space, {len(ids)} translations ({n} a language): "
        + ", ".join(
            f"{k}: line length 1 - cos {v['mean_distance']:.3f}, retrieval {v['retrieval']:.3f}"
            for k, v in numbers.items()
        )
    ]
    if {"untrained", "distilled"} <= numbers.keys():
        before, after = numbers["untrained"]["mean_distance"], numbers["distilled"]["mean_distance"]
        lines.append(
            f"mean line length falls from {before:.3f} to {after:.3f} "
            f"({after / before:.2f} of the untrained length)"
        )
    caption = numbers if len(numbers) > 1 else None
    figs = {"teacher_space": panel.figure}
    if png:  # a still of each frame (an animation's PNG would show only its first frame)
        for name in frames:
            figs[f"teacher_space_{name}"] = teacher_space(
                panel.points, name, title=f"{space_title} ({name})", caption_numbers=caption
            )

    # Each model's own space, one fit over the models that live in the teacher's space: the
    # untrained student's space (same width, unrelated axes) would only add a distant island.
    joint = {name: vectors[name] for name in ("teacher", "student (distilled)")}
    frame = project_frame(joint, row_langs, sentences, pair_ids, method=method)
    cos = translation_cosine(joint, row_langs, pair_ids)
    trust = projection_trustworthiness(
        np.vstack(list(joint.values())), frame[["x", "y"]].to_numpy()
    )
    title = (
        "translation cosine (original space): "
        + ", ".join(f"{k} {v:.2f}" for k, v in cos.items())
        + f" · trustworthiness {trust:.2f}"
    )
    figs["aligned_space"] = aligned_scatter(frame, title=title)

    teacher_en = {lang: models["teacher"].encode(en) for lang, (en, _x) in sets.items()}
    rows = []
    for name, enc in models.items():
        res = evaluate(sets, teacher_en, enc.encode)
        key = headline_metric(res["mean"])
        rows += [
            {"lang": lang, "model": name, "accuracy": res[lang].get(key, np.nan)} for lang in sets
        ]
    figs["accuracy"] = accuracy_bars(
        pd.DataFrame(rows),
        title=f"retrieval into the teacher's space, student(x) → teacher(en), among {n} pairs",
    )
    history = run_dir / "history.json"
    if history.exists():
        figs["training"] = training_curves(pd.DataFrame(json.loads(history.read_text())))
    if watch is not None:
        journey, ends = teacher_space_journey(
            watch.teacher,
            watch.by_frame(),
            watch.langs,
            watch.texts,
            watch.pair_ids,
            method,
            en_sentences=watch.english,
        )
        figs["journey"] = teacher_space_animation(
            journey,
            title=f"{len(watch.english)} held-out sentences, one frame per evaluation",
            caption_numbers=ends,
        )
        if png:  # the frame strip: first, middle and last frame as stills
            picks = list(dict.fromkeys([0, len(watch.frames) // 2, len(watch.frames) - 1]))
            for i in picks:
                figs[f"journey_{i}"] = teacher_space(
                    journey, watch.frames[i], title=watch.frames[i], height=420
                )
        lines.append(f"journey: {len(watch.frames)} frames ({', '.join(watch.frames)})")
    return write_figures(figs, out, png=png), lines
