"""The Gradio app: handlers called directly with tiny models, then through a server and a browser.

The handlers are plain functions (``compare``, ``aligned_space``, ``prepare_run``,
``run_distillation``, ``request_stop``), so most tests need no server. The
``gradio_client`` and headless-Chromium tests launch the app on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import re
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

import app  # noqa: E402
from tests.conftest import TATOEBA_DEV, WORDS  # noqa: E402
from webapp import model_cache, settings  # noqa: E402
from webapp.aligned import aligned_space, builtin_langs  # noqa: E402
from webapp.compare import compare, default_compare_text  # noqa: E402
from webapp.distill import prepare_run, request_stop, run_distillation  # noqa: E402
from webapp.distill_form import FORM_FIELDS, form_values, make_config  # noqa: E402
from webapp.guards import launch_options  # noqa: E402
from webapp.model_cache import encode, get_encoder, server_status  # noqa: E402
from webapp.session import Visitor, forget_visitor, user_error  # noqa: E402

EN = WORDS[:17]
FR = WORDS[17:30]
TEXT = "the cat sits on the mat\nle chat est sur le tapis\nthe dog runs\nhello world"


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch, allow_tiny_models):
    """Visitors' run folders go to the test's temporary folder, not the system's; the tiny
    models' folders are allowed model folders."""
    monkeypatch.setattr(settings, "WORK_ROOT", tmp_path / "visitors")


def _pairs_file(path: Path, n: int = 120, lang: str = "fr", seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = {}
    for _ in range(n):
        k = rng.randint(3, 7)
        lines[" ".join(rng.choice(EN) for _ in range(k))] = " ".join(
            rng.choice(FR) for _ in range(k)
        )
    body = "".join(f"{en}\t{fr}\n" for en, fr in lines.items())
    path.write_text(f"en\t{lang}\n{body}", encoding="utf-8")
    return path


def _form(teacher: str, student: str, pairs: Path | None, /, **kw) -> list:
    """The Distill form in wiring order (see ``build_demo``), sized for tiny models."""
    values = dict(
        teacher=teacher,
        student=student,
        langs=["fr"],
        more_langs=[],
        max_pairs=0,
        english_rows=0,
        epochs=1,
        batch_size=8,
        lr=1e-3,
        loss="mse",
        eval_pairs=20,
        evals=2,
        freeze_layers=1,
        head="ridge",
        own_pairs=str(pairs) if pairs else None,
    )
    values.update(kw)
    assert tuple(values) == FORM_FIELDS
    return list(values.values())


def _message(err: pytest.ExceptionInfo) -> str:
    return str(getattr(err.value, "message", err.value))


# ---- construction ------------------------------------------------------------------------------
def test_build_demo_loads_no_model(monkeypatch):
    from kd.models.encoder import Encoder

    def refuse(*a, **k):
        raise AssertionError("build_demo must not load a model")

    monkeypatch.setattr(Encoder, "load", classmethod(refuse))
    before = model_cache._load_encoder.cache_info().currsize
    demo = app.build_demo()
    assert isinstance(demo, gr.Blocks)
    assert model_cache._load_encoder.cache_info().currsize == before
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"compare", "aligned", "distill", "prepare_run", "stop"} <= names
    training = next(fn for fn in demo.fns.values() if fn.api_name == "distill")
    assert training.concurrency_limit == 1


def test_the_tatoeba_option_is_offered_only_where_a_folder_exists(tmp_path, monkeypatch):
    """On a server without a Tatoeba folder the option would be a dead end: it is not offered;
    where one exists, its path is filled in."""
    monkeypatch.setattr(settings, "SHARED_DATA", tmp_path / "none")
    monkeypatch.delenv(settings.DATA_DIRS_ENV, raising=False)
    by_id = {getattr(b, "elem_id", None): b for b in app.build_demo().blocks.values()}
    assert [c[1] for c in by_id["aligned-source"].choices] == [
        settings.SOURCES[0],
        settings.SOURCES[2],
    ]
    assert by_id["tatoeba-dir"].visible is False
    folder = tmp_path / "data" / "tatoeba-mini"
    folder.mkdir(parents=True)
    (folder / "tatoeba.deu-eng.deu").write_text("x\n", encoding="utf-8")
    (folder / "tatoeba.deu-eng.eng").write_text("x\n", encoding="utf-8")
    monkeypatch.setenv(settings.DATA_DIRS_ENV, str(tmp_path / "data"))
    by_id = {getattr(b, "elem_id", None): b for b in app.build_demo().blocks.values()}
    assert settings.SOURCES[1] in [c[1] for c in by_id["aligned-source"].choices]
    assert by_id["tatoeba-dir"].value.endswith("tatoeba-mini")
    # The box shows while the Tatoeba source is picked, not beside the built-in sentences.
    from webapp.aligned import tatoeba_box

    assert by_id["tatoeba-dir"].visible is False
    assert tatoeba_box(settings.SOURCES[1])["visible"] is True
    assert tatoeba_box(settings.SOURCES[0])["visible"] is False


def test_kd_and_viz_never_import_gradio():
    root = Path(app.__file__).parent
    for path in [*root.glob("kd/**/*.py"), *root.glob("viz/*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "import gradio" not in text and "from gradio" not in text, path


def test_assets_cover_eight_languages_and_four_scripts():
    rows = [line.split("\t") for line in settings.COMPARE_FILE.read_text("utf-8").splitlines()[1:]]
    assert len({lang for lang, _ in rows}) >= 8
    scripts = set()
    for _, sentence in rows:
        for ch in sentence:
            if ch.isalpha():
                import unicodedata

                scripts.add(unicodedata.name(ch).split()[0])
    assert len(scripts & {"LATIN", "CJK", "HIRAGANA", "KATAKANA", "ARABIC", "CYRILLIC"}) >= 4
    assert len(builtin_langs()) >= 8
    assert len(default_compare_text().splitlines()) == len(rows)


def test_state_is_per_visitor():
    demo = app.build_demo()
    state = next(b for b in demo.blocks.values() if isinstance(b, gr.State))
    first, second = copy.deepcopy(state.value), copy.deepcopy(state.value)
    first.student_dir = "/somewhere"
    assert second.student_dir is None and state.value.student_dir is None
    assert state.time_to_live == settings.VISITOR_TTL_S


# ---- Compare -----------------------------------------------------------------------------------
def test_compare_gives_one_heatmap_per_model(tiny_teacher, tiny_student):
    fig, table = compare(TEXT, tiny_teacher, tiny_student, Visitor())
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    assert [t.name for t in fig.data] == ["teacher", "student, untrained"]
    z = np.asarray(fig.data[0].z)
    assert z.shape == (4, 4) and np.allclose(np.diag(z), 1.0, atol=1e-5)
    # the ranking model's cosine beside the rank, on screen however many models follow
    assert list(table.columns) == [
        "rank",
        "cos (student, untrained)",
        "sentence A",
        "sentence B",
        "cos (teacher)",
    ]
    assert len(table) == 6  # 4 sentences: 6 pairs
    ranked = table["cos (student, untrained)"].to_numpy()
    assert (np.diff(ranked) <= 1e-9).all()


def test_compare_says_when_a_sentence_was_cut(tiny_teacher, tiny_student):
    """A sentence past a model's token limit is embedded from its start only: Compare says so
    (two long sentences that differ after the cut would otherwise show cosine 1.00 unexplained)."""
    long_a = " ".join(["the cat sits on the mat"] * 15) + " and the dog runs"
    long_b = " ".join(["the cat sits on the mat"] * 15) + " and the house is big"
    fig, _ = compare(f"{long_a}\n{long_b}\nhello world", tiny_teacher, tiny_student, None)
    title = fig.layout.title.text
    assert "sentence 1, 2 cut at 64 tokens by teacher" in title
    assert "cut at 64 tokens by student, untrained" in title
    fig, _ = compare(TEXT, tiny_teacher, tiny_student, None)
    assert "cut at" not in fig.layout.title.text


def test_models_and_vectors_are_cached(tiny_teacher, tiny_student):
    compare(TEXT, tiny_teacher, tiny_student, None)
    loads = model_cache._load_encoder.cache_info().misses
    hits = model_cache._encode_cached.cache_info().hits
    compare(TEXT, tiny_teacher, tiny_student, None)
    assert model_cache._encode_cached.cache_info().hits == hits + 2
    compare(TEXT + "\nthe red house", tiny_teacher, tiny_student, None)
    assert model_cache._load_encoder.cache_info().misses == loads  # new sentences, same models
    assert model_cache._model_state[tiny_teacher] == "ready"
    vectors = encode(tiny_teacher, ["the cat"])
    assert vectors.shape == (1, 32) and not vectors.flags.writeable


@pytest.mark.parametrize(
    ("text", "teacher", "expected"),
    [
        ("", None, "empty"),
        ("   \n  \n", None, "empty"),
        ("just one line", None, "at least two"),
        ("x" * (settings.MAX_TEXT_CHARS + 1), None, "limit"),
        ("\n".join(["a b"] * (settings.MAX_LINES + 1)), None, "at most"),
        ("short\n" + "y" * (settings.MAX_LINE_CHARS + 1), None, "sentence 2"),
        (TEXT, "not a model!!", "unknown model"),
        (TEXT, "", "no model chosen"),
    ],
)
def test_compare_bad_input_is_a_gr_error(tiny_teacher, tiny_student, text, teacher, expected):
    with pytest.raises(gr.Error) as err:
        compare(text, tiny_teacher if teacher is None else teacher, tiny_student, None)
    assert expected in _message(err)


def test_error_messages_are_escaped():
    from kd.config import ConfigError

    err = user_error("bad <b>input</b>")
    assert "&lt;b&gt;" in err.message and "<b>" not in err.message
    # A settings error names the form's label, not the CLI's flag.
    err = user_error(ConfigError("lr", "must be <b>positive</b>"))
    assert err.message == "'learning rate' must be &lt;b&gt;positive&lt;/b&gt;"


# ---- Aligned spaces ----------------------------------------------------------------------------
def _aligned(tiny_teacher, tiny_student, visitor=None, **kw):
    args = dict(
        source=settings.SOURCES[0],
        tatoeba_dir="",
        upload=None,
        langs_text="de,fr",
        per_lang=16,
        method="pca",
        which=["teacher", "untrained", "distilled"],
        teacher=tiny_teacher,
        student=tiny_student,
        visitor=visitor,
    )
    args.update(kw)
    return aligned_space(**args)


def test_aligned_space_builtin(tiny_teacher, tiny_student):
    fig, numbers, table, space = _aligned(tiny_teacher, tiny_student)
    # 2 models x (1 line trace + en, de, fr)
    assert len(fig.data) == 8
    # The teacher's space: the teacher's English points, the untrained student's translations
    # joined to them; one frame until there is a distilled student.
    assert [st.label for st in space.layout.sliders[0].steps] == ["student, untrained"]
    assert space.data[0].name == "teacher(en)"
    assert "In the teacher's space" in numbers and "*teacher, reading the translations*" in numbers
    assert "never learnt these languages" in numbers  # the baseline explained
    assert "the 32 translations whose nearest of the 16 English sentences shown" in numbers
    assert "48 sentences per model" in numbers
    assert "Trustworthiness" in numbers and "No distilled student yet" in numbers
    assert list(table.columns) == ["lang", "teacher", "student, untrained"]
    assert set(table["lang"]) == {"de", "fr"}


def test_aligned_space_upload_and_tatoeba(tmp_path, tiny_teacher, tiny_student):
    path = _pairs_file(tmp_path / "mine.tsv", n=30)
    fig, numbers, _, _ = _aligned(
        tiny_teacher, tiny_student, source=settings.SOURCES[2], upload=str(path), langs_text="fr"
    )
    assert len(fig.data) == 6 and "Trustworthiness" in numbers
    if TATOEBA_DEV.is_dir():
        fig, _, table, _ = _aligned(
            tiny_teacher,
            tiny_student,
            source=settings.SOURCES[1],
            tatoeba_dir=str(TATOEBA_DEV),
            langs_text="de,ja",
            per_lang=10,
        )
        assert set(table["lang"]) == {"de", "ja"}


def test_aligned_bad_input_is_a_gr_error(tmp_path, monkeypatch, tiny_teacher, tiny_student):
    monkeypatch.setenv(settings.DATA_DIRS_ENV, str(tmp_path))
    malformed = tmp_path / "broken.tsv"
    malformed.write_text("en\tfr\none\ttwo\tthree\n", encoding="utf-8")
    huge = tmp_path / "huge.tsv"
    with open(huge, "wb") as fh:
        fh.truncate(settings.MAX_UPLOAD_BYTES + 1)
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\0" * 10)
    cases = [
        (dict(langs_text="xx"), "unknown language code 'xx'"),
        (dict(langs_text=""), "no languages"),
        (dict(langs_text="en"), "besides English"),
        (dict(langs_text="ko"), "no ko"),
        (dict(per_lang=0), "at least 1"),
        (dict(which=[]), "at least one model"),
        (dict(teacher="no such/model dir!"), "unknown model"),
        (dict(source=settings.SOURCES[1], tatoeba_dir=""), "path"),
        (dict(source=settings.SOURCES[1], tatoeba_dir=str(tmp_path / "nope")), "not a directory"),
        (dict(source=settings.SOURCES[2], upload=None), "no file uploaded"),
        (dict(source=settings.SOURCES[2], upload=str(malformed)), "broken.tsv:2"),
        (dict(source=settings.SOURCES[2], upload=str(huge)), "limit is 5 MB"),
        (dict(source=settings.SOURCES[2], upload=str(binary)), "unknown file type"),
        (dict(source="somewhere else"), "unknown sentence source"),
    ]
    for kw, expected in cases:
        with pytest.raises(gr.Error) as err:
            _aligned(tiny_teacher, tiny_student, **kw)
        assert expected in _message(err), (kw, _message(err))
        # No temporary upload path leaks; Tatoeba messages name the allowed data folders.
        tatoeba = kw.get("source") == settings.SOURCES[1]
        assert str(tmp_path) not in _message(err) or tatoeba, _message(err)


# ---- Distill -----------------------------------------------------------------------------------
def test_prepare_run_rejects_bad_settings(tmp_path, tiny_teacher, tiny_student):
    pairs = _pairs_file(tmp_path / "fr.tsv")
    cases = [
        (dict(lr=-1.0), "'learning rate' must be a positive number"),
        (dict(lr=None), "'learning rate' is empty"),
        (dict(langs=[], own_pairs=None), "at least one language"),
        (dict(langs=["xx"]), "unknown language code 'xx'"),
        (dict(epochs=0), "'epochs' must be a whole number from 1"),
        (dict(epochs=6), "'epochs' must be a whole number from 1 to 5"),
        (dict(max_pairs=2.5), "'pairs per language' must be a whole number"),
        (dict(max_pairs=0, english_rows=0, own_pairs=None), "no training data"),
        (dict(loss="hinge"), "'loss' must be one of"),
        (dict(teacher="not a model!!"), "unknown model"),
        (dict(student=""), "no model chosen"),
    ]
    for kw, expected in cases:
        form = _form(tiny_teacher, tiny_student, pairs, **kw)
        with pytest.raises(gr.Error) as err:
            prepare_run(*form, Visitor())
        assert expected in _message(err), (kw, _message(err))
    visitor = prepare_run(*_form(tiny_teacher, tiny_student, pairs), None)
    assert isinstance(visitor, Visitor) and visitor.queued and visitor.config


def test_make_config_adds_the_uploaded_languages(tmp_path, tiny_teacher, tiny_student):
    from kd.config import TrainConfig

    pairs = _pairs_file(tmp_path / "de.tsv", lang="de")
    cfg = make_config(form_values(_form(tiny_teacher, tiny_student, pairs)))
    assert cfg.langs == ["fr", "de"] and cfg.data == [str(pairs)]
    assert cfg.evals == 2 and cfg.eval_every == 0 and cfg.checkpoint_every == 0
    # A file without a header is in the chosen language when there is exactly one.
    bare = tmp_path / "bare.tsv"
    bare.write_text(pairs.read_text("utf-8").split("\n", 1)[1], encoding="utf-8")
    assert make_config(form_values(_form(tiny_teacher, tiny_student, bare))).langs == ["fr"]
    with pytest.raises(ValueError, match="language"):
        make_config(form_values(_form(tiny_teacher, tiny_student, bare, langs=["fr", "de"])))
    # Pairs asked for from the default source too: it stays, and the file joins it.
    cfg = make_config(form_values(_form(tiny_teacher, tiny_student, pairs, max_pairs=10)))
    assert cfg.data == ["default", str(pairs)]
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_every_form_control_is_the_configs_setting():
    """Each Distill control's label, range and default are TrainConfig's (the app preset and
    the server caps): the page cannot offer what the core refuses, or disagree on a default."""
    from kd.config import KINDS, SETTINGS, TrainConfig, form_range
    from webapp.distill_form import CONFIG_FIELDS, PRESET

    demo = app.build_demo()
    defaults = TrainConfig.from_preset(PRESET)
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    for name in CONFIG_FIELDS:
        block = by_id[f"distill-{name.replace('_', '-')}"]
        spec = SETTINGS[name]
        assert block.label == spec.label, name
        assert block.value == getattr(defaults, name), name
        if spec.choices:
            assert [c[1] for c in block.choices] == list(spec.choices), name
        else:
            low, high = form_range(name)
            if name == "freeze_layers":  # bounded by the default student's layers instead
                assert (block.minimum, block.maximum) == (low, 12), name
                assert high > 12
                continue
            assert (block.minimum, block.maximum) == (low, high), name
            if KINDS[name] is int:  # the core takes the form's whole range, ends included
                TrainConfig.from_preset(PRESET, **{name: int(low)})
                if high is not None and spec.high is not None:
                    assert high <= spec.high, name
    assert by_id["distill-langs"].value == defaults.langs


def test_the_frozen_layers_slider_follows_the_students_layers(allow_tiny_models, tiny_student):
    """The slider offers no more frozen layers than the chosen student has: 2 for the tiny
    student (the value chosen before is cut to fit), 12 for the default, the config's bound for a
    name whose layers this disk cannot tell."""
    from kd.config import form_range
    from webapp.distill_form import frozen_layers_slider

    tiny = frozen_layers_slider(tiny_student, 10)
    assert (tiny.maximum, tiny.value) == (2, 2)
    default = frozen_layers_slider(app.DEFAULT_STUDENT, 4)
    assert (default.maximum, default.value) == (12, 4)
    for unknown in ("someone/not-on-this-disk", "/etc", ""):
        assert frozen_layers_slider(unknown, 4).maximum == form_range("freeze_layers")[1]


def test_one_bad_value_names_the_flag_in_the_cli_and_the_label_in_the_page(
    tmp_path, capsys, tiny_teacher, tiny_student
):
    from kd.cli import main
    from kd.config import SETTINGS
    from webapp.distill_form import CONFIG_FIELDS

    pairs = _pairs_file(tmp_path / "fr.tsv")
    bad = {"epochs": 0, "batch_size": 0, "lr": -1.0, "eval_pairs": -1, "freeze_layers": -1}
    for name, value in bad.items():
        assert name in CONFIG_FIELDS
        flag = "--" + name.replace("_", "-")
        assert main(["distill", "--out", str(tmp_path / "o"), flag, str(value)]) == 2
        cli = capsys.readouterr().err.strip()
        with pytest.raises(gr.Error) as err:
            prepare_run(*_form(tiny_teacher, tiny_student, pairs, **{name: value}), Visitor())
        page = _message(err)
        label = f"'{SETTINGS[name].label}'"
        assert cli.startswith(f"kd: error: {flag} ") and label not in cli, cli
        assert page.startswith(label) and flag not in page, page
        assert cli.split(flag, 1)[1] == page.split(label, 1)[1], (cli, page)


def test_distill_then_compare_with_per_visitor_students(
    tmp_path, tiny_teacher, tiny_student, isolated_cache
):
    from sentence_transformers import SentenceTransformer

    pairs = _pairs_file(tmp_path / "fr.tsv")
    alice, bob = Visitor(), Visitor()
    outputs = list(run_distillation(*_form(tiny_teacher, tiny_student, pairs), alice))
    status, curve, table, bars, zip_path, journey, visitor = outputs[-1]
    assert [st.label for st in journey.layout.sliders[0].steps][-1] == "distilled"
    assert journey.data[0].name == "teacher(en)"
    assert visitor is alice and not alice.training
    assert "Distillation finished" in status
    assert any(hasattr(o[1], "data") for o in outputs[1:-1])  # the curve drawn while it ran
    loss_trace = curve.data[0]
    assert loss_trace.name == "loss" and len(loss_trace.x) > 0
    assert any(t.name == "mean" for t in curve.data)  # dev evaluations during training
    stages = ["teacher", "student, untrained", "student, step 0 (head only)", "student, distilled"]
    assert set(table["model"]) == set(stages)
    assert list(table["language"].unique()) == ["mean", "fr"]
    assert [t.name for t in bars.data] == stages
    # The jump before training, shown: each language's curve starts at step 0 with the
    # untrained student's point, then the head's, before any step; the loss has its trend.
    mean = next(t for t in curve.data if t.name == "mean")
    table_mean = table[table["language"] == "mean"].set_index("model")["cross-model retrieval"]
    assert list(mean.x[:2]) == [0, 0]
    assert list(mean.y[:2]) == pytest.approx(
        [table_mean["student, untrained"], table_mean["student, step 0 (head only)"]], abs=1e-3
    )
    assert curve.data[1].name.startswith("loss, smoothed")
    assert "at step 0, with the linear head, fitted in closed form" in status
    figures = [o[1] for o in outputs[:-1] if hasattr(o[1], "data")]
    drawn = next(f for f in figures if any(t.name == "mean" for t in f.data))
    assert len(drawn.data[0].x) == 0  # the step-0 points are drawn before the first step

    # The zip holds a delta (the app's runs save the tensors they changed) with a README on
    # loading it; `kd export` turns it into a folder SentenceTransformer loads.
    from kd.cli import main as kd_main

    unpacked = tmp_path / "unzipped"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(unpacked)
    run = unpacked / Path(alice.student_dir).name  # one folder, named as its README says
    assert [p.name for p in unpacked.iterdir()] == [run.name]
    readme = (run / "README.md").read_text()
    assert (run / "kd_delta.json").is_file() and f"kd export --model {run.name}" in readme
    assert "a delta" in status and f"kd export --model {run.name}" in status
    assert "Search tabs now show it" in status
    # No server path in what goes home with the visitor: out is the run's name.
    saved = json.loads((run / "kd_config.json").read_text())
    assert saved["out"] == run.name and saved["data"]
    for name in ("kd_config.json", "metrics.json", "kd_delta.json"):
        text = (run / name).read_text()
        assert str(Path(alice.workdir).parent) not in text, name
    assert kd_main(["export", "--model", str(run), "--out", str(tmp_path / "full")]) == 0
    vecs = SentenceTransformer(str(tmp_path / "full"), device="cpu").encode(["le chat"])
    assert vecs.shape == (1, 32)

    # Alice sees her student; Bob, with his own state, does not.
    fig_a, table_a = compare(TEXT, tiny_teacher, tiny_student, alice)
    fig_b, _ = compare(TEXT, tiny_teacher, tiny_student, bob)
    assert len(fig_a.data) == 3 and len(fig_b.data) == 2
    assert "cos (student, distilled)" in table_a.columns
    assert bob.student_dir is None and alice.student_dir != bob.student_dir
    fig, numbers, _, space = _aligned(tiny_teacher, tiny_student, alice)
    assert len(fig.data) == 12 and "No distilled student" not in numbers
    steps = space.layout.sliders[0].steps
    assert [st.label for st in steps] == ["student, untrained", "student, distilled"]
    assert "student, distilled" in steps[-1].args[1]["annotations[0].text"]
    assert "*student, distilled* cos" in numbers

    # A second run replaces the first student on disk.
    first = Path(alice.student_dir)
    list(run_distillation(*_form(tiny_teacher, tiny_student, pairs, evals=0), alice))
    assert not first.exists() and Path(alice.student_dir).is_dir()
    forget_visitor(alice)
    assert not Path(alice.workdir).exists()


def test_stop_before_start_and_during_a_run(tmp_path, tiny_teacher, tiny_student, isolated_cache):
    pairs = _pairs_file(tmp_path / "fr.tsv", n=200)
    visitor = Visitor()
    assert "Nothing" in request_stop(None) and "Nothing" in request_stop(visitor)
    assert not visitor.stop_requested
    visitor = prepare_run(*_form(tiny_teacher, tiny_student, pairs), visitor)
    assert visitor.queued and "before" in request_stop(visitor)
    outputs = list(run_distillation(*_form(tiny_teacher, tiny_student, pairs), visitor))
    assert len(outputs) == 1 and "before the run started" in outputs[0][0]
    assert visitor.student_dir is None and not visitor.stop_requested and not visitor.queued

    form = _form(tiny_teacher, tiny_student, pairs, epochs=5, batch_size=4, evals=0)
    run = run_distillation(*form, visitor)
    last = None
    for out in run:
        last = out
        training = isinstance(out[0], str) and "· loss" in out[0]  # a step was reported
        if visitor.training and not visitor.stop_requested and training:
            assert "Stopping" in request_stop(visitor)
    status = last[0]
    assert "stopped early" in status, status
    assert Path(visitor.student_dir).is_dir() and not visitor.training


def test_leaving_mid_run_stops_the_worker(tmp_path, tiny_teacher, tiny_student, isolated_cache):
    pairs = _pairs_file(tmp_path / "fr.tsv", n=200)
    visitor = Visitor()
    run = run_distillation(*_form(tiny_teacher, tiny_student, pairs, epochs=5), visitor)
    assert next(run)[0] == "Starting…" and visitor.training
    run.close()  # what gradio does when the tab closes or the event is cancelled
    assert visitor.stop_requested and not visitor.training
    assert model_cache._trainings["running"] == 0
    deadline = time.monotonic() + 60
    while any(t.name == "kd-distill" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the training thread did not stop"
        time.sleep(0.1)


def test_next_run_waits_for_the_previous_worker(
    tmp_path, tiny_teacher, tiny_student, isolated_cache
):
    """A run whose page event ended (tab closed) may still be saving: the next run waits for
    its worker instead of training beside it on the same cores."""
    from webapp import distill

    pairs = _pairs_file(tmp_path / "fr.tsv")
    distill._training_slot.acquire()  # the previous visitor's worker, still winding down
    try:
        visitor = Visitor()
        run = run_distillation(*_form(tiny_teacher, tiny_student, pairs, evals=0), visitor)
        assert next(run)[0] == "Starting…"
        assert "waiting for the previous run" in next(run)[0]
    finally:
        distill._training_slot.release()
    status = list(run)[-1][0]
    assert "Distillation finished" in status and Path(visitor.student_dir).is_dir()
    assert not distill._training_slot.locked()


def test_bad_model_during_the_run_is_a_gr_error(tmp_path, tiny_student, isolated_cache):
    pairs = _pairs_file(tmp_path / "fr.tsv")
    visitor = Visitor()
    form = _form(str(tmp_path / "no-such-dir"), tiny_student, pairs)
    with pytest.raises(gr.Error) as err:
        list(run_distillation(*form, visitor))
    assert "unknown model" in _message(err) or "no-such-dir" in _message(err)
    assert not visitor.training and model_cache._trainings["running"] == 0


def test_server_status_mentions_models_and_umap(tiny_teacher):
    visitor = Visitor()
    get_encoder(tiny_teacher, visitor=visitor)
    line = server_status(visitor)
    assert "UMAP" in line and f"`{Path(tiny_teacher).name}` ready" in line


def test_server_status_forgets_old_failures_and_ends_trainings(tmp_path, monkeypatch):
    """A model that failed to load is named for a minute, not forever; a finished training is
    no longer counted; while one runs the status refreshes fast."""
    from webapp.model_cache import FAILURE_SHOWN_S, status_tick, training_finished, training_started

    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not weights")
    monkeypatch.setenv(settings.MODEL_DIRS_ENV, str(tmp_path))
    visitor = Visitor()
    with pytest.raises(Exception):  # noqa: B017 - whatever the loader raises
        get_encoder(str(broken), visitor=visitor)
    assert "`broken-model` failed to load" in server_status(visitor)
    clock = model_cache.time.monotonic() + FAILURE_SHOWN_S + 1
    monkeypatch.setattr(model_cache.time, "monotonic", lambda: clock)
    assert "broken-model" not in server_status(visitor)
    training_started()
    try:
        assert "training: 1 running" in server_status()
        assert status_tick()[1].value == 2
    finally:
        training_finished()
    assert "training: idle" in server_status()


# ---- through a server --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app():
    """The app served on 127.0.0.1 on a free port, with ``main()``'s launch options; yields
    (demo, url, port) and closes the server afterwards."""
    demo = app.build_demo()
    port = _free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(),
    )
    try:
        yield demo, f"http://127.0.0.1:{port}/", port
    finally:
        demo.close()


@pytest.fixture
def served():
    with serve_app() as (demo, url, _):
        yield demo, url


def _heatmap_names(plot_payload) -> list[str]:
    plot = plot_payload["plot"] if isinstance(plot_payload, dict) else plot_payload
    data = json.loads(plot)["data"] if isinstance(plot, str) else plot["data"]
    return [trace["name"] for trace in data if trace["type"] == "heatmap"]


def test_client_calls_compare_and_gets_errors(served, tiny_teacher, tiny_student):
    from gradio_client import Client

    _, url = served
    client = Client(url, verbose=False)
    plot, table = client.predict(TEXT, tiny_teacher, tiny_student, api_name="/compare")
    assert _heatmap_names(plot) == ["teacher", "student, untrained"]
    assert len(table["data"]) == 6
    with pytest.raises(Exception, match="empty"):
        client.predict("", tiny_teacher, tiny_student, api_name="/compare")
    # The server keeps serving after an error.
    plot, _ = client.predict(TEXT, tiny_teacher, tiny_student, api_name="/compare")
    assert len(_heatmap_names(plot)) == 2


def test_ten_visitors_compare_while_one_trains(
    served, tmp_path, tiny_teacher, tiny_student, isolated_cache
):
    from gradio_client import Client, handle_file

    _, url = served
    pairs = _pairs_file(tmp_path / "fr.tsv", n=200)
    trainer = Client(url, verbose=False)
    form = _form(tiny_teacher, tiny_student, None, epochs=3, batch_size=4)
    form[-1] = handle_file(str(pairs))
    job = trainer.submit(*form, api_name="/distill")

    answers: list = [None] * 10
    errors: list = []

    def visit(i: int) -> None:
        try:
            client = Client(url, verbose=False)
            text = f"{TEXT}\nthe big red house {i}"
            plot, table = client.predict(text, tiny_teacher, tiny_student, api_name="/compare")
            answers[i] = (_heatmap_names(plot), len(table["data"]))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert all(a == (["teacher", "student, untrained"], 10) for a in answers), answers

    final = job.result(timeout=300)
    assert "Distillation finished" in final[0]
    plot, _ = trainer.predict(TEXT, tiny_teacher, tiny_student, api_name="/compare")
    assert _heatmap_names(plot)[-1] == "student, distilled"
    other = Client(url, verbose=False)
    plot, _ = other.predict(TEXT, tiny_teacher, tiny_student, api_name="/compare")
    assert "student, distilled" not in _heatmap_names(plot)


# ---- in a real browser -------------------------------------------------------------------------
CHROMIUM = os.environ.get("KD_CHROMIUM", "/usr/bin/chromium")


def _open_page(pw, url: str):
    """Headless Chromium on the app's page, once its title shows: (browser, page)."""
    browser = pw.chromium.launch(
        executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_text("Multilingual knowledge distillation").first.wait_for()
    return browser, page


def _pick_models(page, teacher: str, student: str) -> None:
    for label, value in (("teacher (English)", teacher), ("student", student)):
        box = page.get_by_label(label).first
        box.fill(value)
        box.press("Enter")


@pytest.mark.slow
def _rows_shown(page, selector: str, timeout: float = 60.0) -> int:
    """How many result ids (``t001``, ``de-own-03``) a table shows, once it shows any."""
    ids = re.compile(r"^(t\d{3}|[a-z]{2}-own-\d{2})$", re.MULTILINE)
    deadline = time.monotonic() + timeout
    while True:
        text = page.evaluate(f"() => document.querySelector('{selector}')?.innerText ?? ''")
        found = len(ids.findall(text))
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_browser_end_to_end(served, tmp_path, tiny_teacher, tiny_student, isolated_cache):
    """Headless Chromium: a short distillation, Compare, Aligned spaces, an error toast.

    Screenshots go to ``$KD_SCREENSHOTS`` (default: the test's temporary folder).
    """
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shots = Path(os.environ.get("KD_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    _, url = served
    pairs = _pairs_file(tmp_path / "fr.tsv", n=200)

    with sync_api.sync_playwright() as pw:
        browser, page = _open_page(pw, url)
        page.wait_for_function(
            "() => document.querySelector('#server-status')?.innerText.includes('UMAP')"
        )

        _pick_models(page, tiny_teacher, tiny_student)

        # Distill: tiny models, own pairs only (French), a few epochs.
        page.get_by_role("tab", name="Distill").click()
        page.locator("#distill-langs label", has_text="(").first.wait_for()  # counts loaded
        for code in ("de", "es", "ru", "ja", "zh", "ar"):
            page.locator("#distill-langs label", has_text=f"{code} · ").first.click()
        for label, value in (
            ("pairs per language", "0"),
            ("English-only rows", "0"),
            ("epochs", "3"),
            ("batch size", "4"),
        ):
            box = page.get_by_label(f"number input for {label}")
            box.fill(value)
            box.press("Tab")
        page.get_by_text("advanced").click()
        page.locator("#own-pairs input[type=file]").set_input_files(str(pairs))
        page.locator("#own-pairs", has_text="fr.tsv").wait_for()
        page.locator("#start").click()
        try:
            page.wait_for_function(
                "() => document.querySelector('#curve .js-plotly-plot')?._fullData?.[0]?._length",
                timeout=120_000,
            )
        except Exception:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            raise
        page.screenshot(path=str(shots / "distill-running.png"), full_page=True)
        page.get_by_text("Distillation finished").wait_for(timeout=180_000)
        assert page.locator("#results table").count() >= 1
        # The jump at step 0 is on the curve: the mean's first two points, untrained then head.
        first = page.evaluate(
            "() => { const t = document.querySelector('#curve .js-plotly-plot')._fullData"
            ".find(d => d.name === 'mean'); return Array.from(t.x).slice(0, 2); }"
        )
        assert first == [0, 0], first
        assert "at step 0" in page.locator("#run-status").inner_text()
        # Watch it happen: the held-out translations' journey, one slider step per evaluation;
        # moving the slider to the last step moves the students' points.
        page.wait_for_function(
            "() => (document.querySelector('#journey .js-plotly-plot')?.layout?.sliders?.[0]"
            "?.steps?.length || 0) >= 3"
        )
        read = (
            "() => { const gd = document.querySelector('#journey .js-plotly-plot');"
            " return {first: gd.data[0].name, x: Array.from(gd._fullData.at(-1).x),"
            " steps: gd.layout.sliders[0].steps.map(s => s.label)}; }"
        )
        before = page.evaluate(read)
        assert before["first"] == "teacher(en)" and before["steps"][-1] == "distilled"
        last_step = page.locator("#journey .slider-label-group").last
        last_step.scroll_into_view_if_needed()
        box = last_step.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            page.wait_for_function(  # the restyle step applied: the last trace's x has changed
                "(x0) => JSON.stringify(Array.from(document.querySelector('#journey "
                ".js-plotly-plot')._fullData.at(-1).x)) !== x0",
                arg=json.dumps(before["x"], separators=(",", ":")),
                timeout=20_000,
            )
        except Exception:
            page.locator("#journey").screenshot(path=str(shots / "journey-failure.png"))
            raise
        after = page.evaluate(read)
        assert after["x"] != before["x"], "the slider did not move the translations"
        # Narrow result tables keep their headers whole (no letter-by-letter wrapping).
        assert (
            page.evaluate(
                "() => getComputedStyle(document.querySelector('#results th')).whiteSpace"
            )
            == "nowrap"
        )
        page.screenshot(path=str(shots / "distill.png"), full_page=True)
        # A refused form afterwards is a toast; the finished run's message stays readable, with
        # no error badge over it.
        rate = page.get_by_label("learning rate")
        rate.fill("0")
        page.locator("#start").click()
        page.locator("[data-testid=toast-body]", has_text="learning rate").first.wait_for()
        shown = page.locator("#run-status").inner_text()
        assert "Distillation finished" in shown and "Error" not in shown, shown
        rate.fill("0.0003")

        # Compare: three heatmaps now (teacher, untrained, distilled).
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare-text textarea").fill(TEXT)
        page.locator("#compare-btn").click()
        page.wait_for_function(
            "() => document.querySelector('#heatmaps .js-plotly-plot')?.data?.length === 3"
        )
        page.screenshot(path=str(shots / "compare.png"), full_page=True)

        # Bad input: an error toast, and the page keeps working.
        page.locator("#compare-text textarea").fill("")
        page.locator("#compare-btn").click()
        page.get_by_text("the text box is empty").first.wait_for()

        # Aligned spaces: the built-in set, PCA, three facets.
        page.get_by_role("tab", name="Aligned spaces").click()
        page.locator("#draw").click()
        page.wait_for_function(
            "() => document.querySelector('#scatter .js-plotly-plot')?.data?.length > 0"
        )
        page.get_by_text("Trustworthiness").first.wait_for()
        # The teacher's space, one panel: untrained and distilled frames on the teacher's points.
        space = page.evaluate(
            "() => { const gd = document.querySelector('#teacher-space .js-plotly-plot');"
            " return {first: gd.data[0].name, steps: gd.layout.sliders[0].steps.map(s => s.label)};"
            " }"
        )
        assert space == {
            "first": "teacher(en)",
            "steps": ["student, untrained", "student, distilled"],
        }, space
        # The caption follows the slider: the untrained frame's numbers, then the distilled's.
        caption = (
            "() => document.querySelector('#teacher-space .js-plotly-plot').layout.annotations"
            ".find(a => a.name === 'caption').text"
        )
        first_caption = page.evaluate(caption)
        assert "\u2192" not in first_caption and "English sentences" in first_caption
        last_step = page.locator("#teacher-space .slider-label-group").last
        last_step.scroll_into_view_if_needed()
        box = last_step.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function(f"() => ({caption})().includes('student, distilled')")
        assert page.evaluate(caption) != first_caption
        page.screenshot(path=str(shots / "aligned.png"), full_page=True)

        # Search: the prefilled query, three ranked tables (the distilled student's included).
        page.get_by_role("tab", name="Search").click()
        page.locator("#search-btn").click()
        page.get_by_text("searched the teacher's own index").first.wait_for()
        for key in ("teacher", "untrained", "distilled"):  # five ranked rows in each table
            assert _rows_shown(page, f"#hits-{key}") == 5, key
        assert not page.locator("#hits-prebuilt").is_visible()  # none for the tiny teacher
        page.screenshot(path=str(shots / "search.png"), full_page=True)
        page.get_by_role("tab", name="Learn").click()
        page.get_by_text("Cite").first.wait_for()
        page.screenshot(path=str(shots / "learn.png"), full_page=True)
        browser.close()
    for name in ("distill-running", "distill", "compare", "aligned", "search", "learn"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, name


@pytest.mark.slow
def test_browser_run_without_data_trains_on_kds_everyday_set(
    monkeypatch, tmp_path, tiny_teacher, tiny_student, isolated_cache
):
    """A fresh clone offline (no KD_DATA, no Hub): the form names kd's own everyday set and
    counts its pairs, and the finished run says it trained on it."""
    import webapp.distill_form

    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    monkeypatch.delenv("KD_DATA", raising=False)
    monkeypatch.setattr("kd.data.sources.hub_reachable", lambda *a, **k: False)
    webapp.distill_form._source_counts.cache_clear()
    try:
        with serve_app() as (_, url, _port), sync_api.sync_playwright() as pw:
            browser, page = _open_page(pw, url)
            _pick_models(page, tiny_teacher, tiny_student)
            page.get_by_role("tab", name="Distill").click()
            langs = page.locator("#distill-langs")
            assert "kd's own everyday set" in langs.inner_text()
            langs.locator("label", has_text="(400 pairs)").first.wait_for()  # its counts
            for label, value in (
                ("pairs per language", "20"),
                ("English-only rows", "0"),
                ("batch size", "16"),
            ):
                box = page.get_by_label(f"number input for {label}")
                box.fill(value)
                box.press("Tab")
            page.locator("#start").click()
            status = page.locator("#run-status")
            status.get_by_text("kd's own everyday set").first.wait_for(timeout=120_000)
            page.get_by_text("Distillation finished").wait_for(timeout=180_000)
            shown = status.inner_text()
            assert "Trained on kd's own everyday set: 140 pairs in 7 languages" in shown, shown
            browser.close()
    finally:
        webapp.distill_form._source_counts.cache_clear()


def test_browser_first_page_shows_the_prebuilt_student(served, isolated_cache):
    """Without any training, the page opens on Compare with the pre-built student's heatmap
    beside the teacher's and the untrained student's, and its dev-set numbers above."""
    from webapp.prebuilt import prebuilt_dir

    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    if prebuilt_dir() is None:
        pytest.skip("no pre-built student (assets/prebuilt-student, or KD_PREBUILT)")
    _, url = served
    label = settings.MODEL_LABELS["prebuilt"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_function(
            "() => document.querySelector('#heatmaps .js-plotly-plot')?.data?.length === 3",
            timeout=120_000,
        )
        names = page.evaluate(
            "() => document.querySelector('#heatmaps .js-plotly-plot').data.map(t => t.name)"
        )
        assert names == ["teacher", "student, untrained", label], names
        note = page.locator("#prebuilt-note").inner_text()
        assert label in note and "Tatoeba dev set" in note and "%" in note, note
        assert page.locator("#compare-text").is_visible()  # the Compare tab is the one open
        shots = (
            Path(os.environ.get("KD_SCREENSHOTS", "")) if os.environ.get("KD_SCREENSHOTS") else None
        )
        if shots:
            page.screenshot(path=str(shots / "first-page.png"), full_page=True)
        browser.close()


def test_requirements_txt_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")
    root = Path(app.__file__).parent
    project = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))["project"]
    wanted = project["dependencies"]
    lines = (root / "requirements.txt").read_text("utf-8").splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.startswith(("#", "--"))]
    # The Space installs PyTorch's CPU-only wheel of the same version, from PyTorch's index.
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    torch = next(line for line in listed if line.startswith("torch=="))
    assert torch.endswith("+cpu")
    listed = [line.removesuffix("+cpu") for line in listed]
    assert sorted(listed) == sorted(wanted)


def test_model_ids_match_the_core():
    from kd.models.encoder import DEFAULT_STUDENT, DEFAULT_TEACHER, OFFLINE_MODELS

    assert (settings.DEFAULT_TEACHER, settings.DEFAULT_STUDENT) == (
        DEFAULT_TEACHER,
        DEFAULT_STUDENT,
    )
    assert set(settings.TEACHER_CHOICES + settings.STUDENT_CHOICES) <= set(OFFLINE_MODELS)


def test_the_status_line_says_a_visitors_run_is_starting():
    """Between Start and the run's first phase the status line no longer says only 'idle'."""
    from webapp.model_cache import server_status

    visitor = Visitor()
    assert "yours starting" not in server_status(visitor)
    visitor.queued = True
    assert "training: idle · yours starting…" in server_status(visitor)
    assert "yours starting" not in server_status(None)  # other visitors' runs are not named


def test_a_server_whose_kd_data_names_no_folder_still_opens(monkeypatch, tmp_path):
    """A mistyped KD_DATA fails a run with its one line, not the page at start-up."""
    import webapp.distill_form

    monkeypatch.setenv("KD_DATA", str(tmp_path / "missing"))
    webapp.distill_form._source_counts.cache_clear()
    try:
        by_id = {getattr(b, "elem_id", None): b for b in app.build_demo().blocks.values()}
        assert "none found on this server" in by_id["distill-langs"].label
        dev, _ = webapp.distill_form.language_choices()
        assert dev[0][0] == "de · German"  # no counts to give
    finally:
        webapp.distill_form._source_counts.cache_clear()
