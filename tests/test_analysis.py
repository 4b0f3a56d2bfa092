"""The error inspector and the language-bias test: numpy cores, ``kd eval --errors/--bias``, the
app's Analyse tab.

A pair a model must fail: its translation is the *text* of another pair's English sentence
("hello world" translating "good morning"). In its own space any model gives that translation
the very vector of the other English sentence (cosine 1.0), so it ranks it first.
"""

from __future__ import annotations

import json

import gradio as gr
import numpy as np
import pytest

from kd.cli import main
from kd.evaluate.bias import CATEGORIES, language_bias
from kd.evaluate.errors import rank_pairs, retrieval_errors
from kd.evaluate.metrics import retrieval_accuracy
from tests.conftest import TATOEBA_DEV

ENGLISH = ["hello world", "good morning", "thank you", "red house"]
GERMAN = ["haus rot", "hello world", "matte blau", "klein gross"]  # pair 1 must fail


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.startswith("kd: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _tatoeba(tmp_path, de=GERMAN, en=ENGLISH):
    folder = tmp_path / "tatoeba"
    folder.mkdir(exist_ok=True)
    (folder / "tatoeba.deu-eng.deu").write_text("\n".join(de) + "\n", encoding="utf-8")
    (folder / "tatoeba.deu-eng.eng").write_text("\n".join(en) + "\n", encoding="utf-8")
    return folder


# ---- the error inspector, on vectors -----------------------------------------------------------
def test_wrong_pairs_are_exactly_those_retrieval_accuracy_counts_wrong():
    rng = np.random.default_rng(0)
    for n, d in ((30, 8), (50, 3)):
        x, en = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        en[5] = en[4]  # pairs 4 and 5 tie: argmax takes the lower row, so must the inspector
        x[4] = x[5] = en[4]
        out = retrieval_errors([f"e{i}" for i in range(n)], [f"x{i}" for i in range(n)], {
            "m": (x, en)
        }, limit=n)  # fmt: skip
        m = out["models"]["m"]
        assert m["right"] == round(retrieval_accuracy(x, en)["src2trg_accuracy"] * n)
        assert m["wrong"] == len(m["errors"]) == n - m["right"]
        assert 5 in {e["pair"] for e in m["errors"]}  # pair 5 loses its tie to row 4
        for e in m["errors"]:
            assert e["gold_rank"] > 1 and e["top"][0]["pair"] != e["pair"]
            assert e["top"][0]["score"] >= e["gold_score"]
            assert [h["score"] for h in e["top"]] == sorted(
                (h["score"] for h in e["top"]), reverse=True
            )


def test_fixed_and_broken_pairs_compare_two_models():
    e = np.eye(4)
    before = (e[[1, 1, 2, 3]], e)  # pair 0 wrong (ranks English 1 first)
    after = (e[[0, 1, 3, 3]], e)  # pair 0 right now, pair 2 wrong
    out = retrieval_errors(
        ENGLISH, GERMAN, {"untrained": before, "distilled": after}, before="untrained",
        after="distilled",
    )  # fmt: skip
    assert out["fixed"]["count"] == 1 and out["broken"]["count"] == 1
    fixed, broken = out["fixed"]["pairs"][0], out["broken"]["pairs"][0]
    assert fixed["before"]["pair"] == 0 and fixed["before"]["top"][0]["english"] == "good morning"
    assert fixed["after"]["gold_rank"] == 1
    assert broken["after"]["sentence"] == "matte blau"
    assert broken["after"]["top"][0]["english"] == "red house"
    assert json.loads(json.dumps(out)) == out  # JSON-ready for kd report


def test_rank_pairs_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        rank_pairs(np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="row-aligned"):
        retrieval_errors(["a"], ["b", "c"], {})


# ---- language bias, on vectors -----------------------------------------------------------------
def _two_langs(biased: bool, n: int = 6, seed: int = 0):
    """Pairs in de and fr whose English vectors are random; each translation is its English
    vector plus, when ``biased``, a large shift shared by its whole language, along an axis no
    English vector uses (so each language's own pool still ranks its English sentence first)."""
    rng = np.random.default_rng(seed)
    sets, vectors = {}, {}
    for k, lang in enumerate(("de", "fr")):
        en_v = rng.normal(size=(n, 16))
        en_v[:, :2] = 0.0  # axes 0 and 1 carry the languages' shifts
        shift = np.zeros(16)
        shift[k] = 30.0 if biased else 0.0
        x_v = en_v + shift + rng.normal(scale=0.01, size=(n, 16))
        sets[lang] = ([f"{lang} en {i}" for i in range(n)], [f"{lang} x {i}" for i in range(n)])
        vectors[lang] = (en_v, x_v)
    return sets, vectors


@pytest.mark.parametrize("biased", [False, True])
def test_bias_counts_add_up_and_follow_the_vectors(biased):
    sets, vectors = _two_langs(biased)
    out = language_bias(sets, vectors)
    assert out["pool"] == 24  # 12 English + 12 translations
    for entry in out["per_lang"].values():
        assert sum(entry[c] for c in CATEGORIES) == entry["queries"] == 6
        assert entry["other"] == entry["other_english"] + entry["other_language"]
        assert entry["per_language_accuracy"] == 1.0  # against English only, all right
    mean = out["mean"]
    if biased:  # every translation finds its own language first: accuracy lost to mixing
        assert mean["own_language_share"] == 1.0 and mean["drop"] == 1.0
    else:
        assert mean["translation_share"] == 1.0 and mean["drop"] == 0.0


def test_bias_counts_a_shared_english_sentence_as_the_translation():
    e = np.eye(6)
    sets = {"de": (["hi", "bye"], ["hallo", "tschuess"]), "fr": (["hi", "yes"], ["salut", "oui"])}
    # fr's "salut" points at the English "hi" of the de set: the same text, so a translation.
    vectors = {"de": (e[:2], e[:2]), "fr": (e[[0, 2]], e[[0, 2]])}
    out = language_bias(sets, vectors)
    assert out["pool"] == 7  # "hi" counted once
    assert out["per_lang"]["fr"]["translation"] == 2 and out["mean"]["mixed_accuracy"] == 1.0


def test_bias_says_when_the_neighbour_is_the_same_meaning_in_a_third_language():
    e = np.eye(4)
    sets = {"de": (["hi", "bye"], ["hallo", "tschuess"]), "fr": (["hi", "yes"], ["salut", "oui"])}
    # "hallo" and "salut" share one vector: each finds the other, a third-language sentence
    # translating its own English sentence "hi".
    vectors = {"de": (e[[0, 1]], e[[3, 1]]), "fr": (e[[0, 2]], e[[3, 2]])}
    out = language_bias(sets, vectors)
    for lang in ("de", "fr"):
        entry = out["per_lang"][lang]
        assert (entry["translation"], entry["other_language"], entry["same_meaning"]) == (1, 1, 1)
        assert entry["own_language"] == entry["other_english"] == 0


def test_bias_refuses_english_and_empty_sets():
    with pytest.raises(ValueError, match="English is the target"):
        language_bias({"en": (["a"], ["a"])}, {"en": (np.ones((1, 2)), np.ones((1, 2)))})
    with pytest.raises(ValueError, match="at least one"):
        language_bias({}, {})


# ---- kd eval --errors / --bias -----------------------------------------------------------------
def test_eval_errors_lists_the_pair_a_student_must_fail(
    tmp_path, capsys, tiny_teacher, tiny_student
):
    folder = _tatoeba(tmp_path)
    argv = ("eval", "--model", tiny_student, "--teacher", tiny_teacher, "--baseline",
            tiny_teacher, "--tatoeba", str(folder), "--langs", "de", "--errors", "4",
            "--space", "own")  # fmt: skip
    rc, out, err = _run(capsys, *argv, "--json")
    assert rc == 0, err
    report = json.loads(out)["errors"]
    assert report["space"] == "own"
    for name in ("teacher", "student_untrained", "student_distilled"):
        wrong = {e["pair"]: e for e in report["langs"]["de"]["models"][name]["errors"]}
        assert 1 in wrong, name
        assert wrong[1]["sentence"] == "hello world" and wrong[1]["english"] == "good morning"
        assert wrong[1]["top"][0]["english"] == "hello world"
        assert wrong[1]["top"][0]["score"] == pytest.approx(1.0, abs=1e-3)
        assert len(wrong[1]["top"]) == 4  # k = 5, but only 4 English sentences
    assert {"fixed", "broken"} <= set(report["langs"]["de"])
    rc, out, err = _run(capsys, *argv)
    assert rc == 0, err
    assert "[1] hello world" in out and "right: good morning" in out
    assert "1. 1.000  hello world" in out and "fixed by distillation" in out


def test_eval_bias_prints_a_table(tmp_path, capsys, tiny_teacher, tiny_student):
    folder = _tatoeba(tmp_path)
    (folder / "tatoeba.fra-eng.fra").write_text("merci\nbonjour\n", encoding="utf-8")
    (folder / "tatoeba.fra-eng.eng").write_text("thank you\ngood morning\n", encoding="utf-8")
    argv = ("eval", "--model", tiny_student, "--teacher", tiny_teacher, "--tatoeba",
            str(folder), "--langs", "de,fr", "--bias")  # fmt: skip
    rc, out, err = _run(capsys, *argv, "--json")
    assert rc == 0, err
    bias = json.loads(out)["bias"]
    assert set(bias) == {"teacher", "model"}
    assert bias["model"]["pool"] == 4 + 4 + 2  # 4 distinct English (2 shared), 4 de, 2 fr
    for entry in bias["model"]["per_lang"].values():
        assert entry["translation"] + entry["own_language"] + entry["other"] == entry["queries"]
    rc, out, err = _run(capsys, *argv)
    assert rc == 0, err
    assert "Language bias" in out and "mixed acc" in out
    table = out[out.index("Language bias") :]  # the eval table above names the model per row
    rows = [
        line.split()[:2] for line in table.splitlines() if line.startswith(("model", "teacher"))
    ]
    assert rows[1:] == [[m, lang] for m in ("teacher", "model") for lang in ("de", "fr", "mean")]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--errors", "-1"), "--errors must be 0"),
        (("--langs", "xx", "--bias"), "xx"),
        (("--langs", "sw", "--errors", "3"), "cannot be read"),
    ],
)
def test_eval_analysis_bad_options_one_line(tmp_path, capsys, tiny_teacher, extra, fragment):
    folder = _tatoeba(tmp_path)
    rc, _, err = _run(capsys, "eval", "--model", tiny_teacher, "--tatoeba", str(folder), *extra)
    _one_line_error(rc, err, fragment)


def test_eval_analysis_needs_tatoeba(tmp_path, capsys, tiny_teacher):
    rc, _, err = _run(capsys, "eval", "--model", tiny_teacher, "--sts", str(tmp_path), "--bias")
    _one_line_error(rc, err, "--tatoeba")


@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe\x00binary\x80\n" * 4])
def test_eval_analysis_empty_or_binary_files_one_line(tmp_path, capsys, tiny_teacher, content):
    folder = _tatoeba(tmp_path)
    (folder / "tatoeba.deu-eng.deu").write_bytes(content)
    rc, _, err = _run(
        capsys, "eval", "--model", tiny_teacher, "--tatoeba", str(folder), "--langs", "de",
        "--errors", "2", "--bias",
    )  # fmt: skip
    _one_line_error(rc, err)


# ---- the app's Analyse tab ---------------------------------------------------------------------


def _analyse(tmp_path, monkeypatch, tiny_teacher, tiny_student, **kw):
    from webapp.analyse import analyse
    from webapp.settings import SOURCES

    monkeypatch.setenv("KD_DATA_DIRS", str(tmp_path))
    args = dict(
        source=SOURCES[1],
        tatoeba_dir=str(_tatoeba(tmp_path)),
        upload=None,
        langs_text="de",
        per_lang=10,
        space="own",
        teacher=tiny_teacher,
        student=tiny_student,
        visitor=None,
    )
    args.update(kw)
    return analyse(**args)


def test_app_analyse_shows_the_failed_pair_and_the_bias(
    tmp_path, monkeypatch, allow_tiny_models, tiny_teacher, tiny_student
):
    from webapp.analyse import pick_row, show_errors

    summary, accuracy, lang, errors, failures, fig, bias = _analyse(
        tmp_path, monkeypatch, tiny_teacher, tiny_student
    )
    assert "4 held-out pairs" in summary
    assert list(accuracy["lang"]) == ["de"] and (accuracy.iloc[0, 2:] <= 0.75).all()
    assert lang["value"] == "de" and lang["choices"] == ["de"]
    # The pair every model fails, with what it ranked first (Markdown-escaped).
    assert "*hello world*" in failures and "right: good morning" in failures
    assert "ranked first: 1.00 hello world" in failures
    assert show_errors(errors, "de") == failures
    assert "Press *Analyse*" in show_errors(None, "de")
    click = {"index": [0, 1], "value": 0.5, "row_value": ["de", 4, 0.5, 0.5]}
    assert pick_row(errors, gr.SelectData(None, click))["value"] == "de"
    click = {"index": [0, 1], "value": 0.5, "row_value": None}  # an older client: the index
    assert pick_row(errors, gr.SelectData(None, click))["value"] == "de"
    assert pick_row(errors, gr.SelectData(None, {"index": [5, 0], "value": 1})) == gr.update()
    assert [t.name for t in fig.data][-1] == "accuracy in its own language pool"
    assert set(bias["model"]) == {"teacher", "student, untrained"}
    assert set(bias["lang"]) == {"de", "mean"}


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"langs_text": "xx"}, "xx"),
        ({"langs_text": "sw"}, "cannot be read"),
        ({"per_lang": 1}, "at least 2"),
        ({"source": "built-in sentences", "langs_text": "sw"}, "built-in set has no sw"),
        ({"source": "uploaded file"}, "no file uploaded"),
    ],
)
def test_app_analyse_bad_input_is_one_message(
    tmp_path, monkeypatch, allow_tiny_models, tiny_teacher, tiny_student, kw, fragment
):
    with pytest.raises(gr.Error) as err:
        _analyse(tmp_path, monkeypatch, tiny_teacher, tiny_student, **kw)
    assert fragment in err.value.message and "\n" not in err.value.message


def test_app_analyse_cost_cap(tmp_path, monkeypatch, allow_tiny_models, tiny_teacher, tiny_student):
    from webapp import settings
    from webapp.analyse import limits_note

    monkeypatch.setattr(settings, "ANALYSE_MAX_PAIRS", 3)
    assert "at most 3 pairs" in limits_note()
    with pytest.raises(gr.Error, match="4 pairs; one analysis takes at most 3"):
        _analyse(tmp_path, monkeypatch, tiny_teacher, tiny_student)
    monkeypatch.setattr(settings, "ANALYSE_MAX_PAIRS", 1000)
    monkeypatch.setattr(settings, "ANALYSE_MAX_CHARS", 50)
    with pytest.raises(gr.Error, match="characters"):
        _analyse(tmp_path, monkeypatch, tiny_teacher, tiny_student)


@pytest.mark.skipif(not TATOEBA_DEV.is_dir(), reason="../shared/data/tatoeba-dev is absent")
def test_app_analyse_reads_the_dev_set_within_the_cap():
    from webapp.analyse import pair_sets

    sets = pair_sets("Tatoeba directory", str(TATOEBA_DEV), None, "de,ja", 100)
    assert [len(en) for en, _ in sets.values()] == [100, 100]
    with pytest.raises(ValueError, match="at most 1,000"):
        pair_sets("Tatoeba directory", str(TATOEBA_DEV), None, "de,ja,fr", 400)


def test_the_app_has_an_analyse_tab_after_search_with_its_api():
    import app

    demo = app.build_demo()
    fn = next(fn for fn in demo.fns.values() if fn.api_name == "analyse")
    assert fn.concurrency_limit == 2  # two analyses at once at most, as Draw
    tabs = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs.index("Search") < tabs.index("Analyse") < tabs.index("Learn")


def test_the_analyse_tab_opens_with_languages_its_sources_have():
    """The tab's default languages read from the built-in set and (where the server has it)
    the Tatoeba dev set, so the first click at the defaults analyses instead of refusing."""
    import app
    from webapp.analyse import pair_sets
    from webapp.settings import SOURCES

    demo = app.build_demo()
    box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "analyse-langs")
    assert len(pair_sets(SOURCES[0], None, None, box.value, 2)) == len(box.value.split(","))
    if TATOEBA_DEV.is_dir():
        found = pair_sets(SOURCES[1], str(TATOEBA_DEV), None, box.value, 2)
        assert len(found) == len(box.value.split(","))
