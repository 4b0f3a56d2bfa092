"""``kd report``: one self-contained HTML page and its JSON, with real content: the baselines,
the verdicts, the collapse alarm on a built collapsed student; bad input is one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kd.cli import main
from kd.evaluate.report import SECTIONS, render, results_from_run, svg_bars
from tests.test_sts import write_sts

EN = ["the dog", "hello", "the cat", "red blue", "good morning", "thank you friend", "water"]
DE = ["der hund", "hallo", "die katze", "rot blau", "gross klein", "haus", "matte und"]


def _tatoeba(tmp_path):
    """Seven pairs whose "translation" is the English sentence itself: any model that keeps
    sentences apart pairs them all (accuracy 1.0 within the model); a collapsed one cannot."""
    folder = tmp_path / "tatoeba"
    folder.mkdir()
    (folder / "tatoeba.deu-eng.deu").write_text("\n".join(EN) + "\n", encoding="utf-8")
    (folder / "tatoeba.deu-eng.eng").write_text("\n".join(EN) + "\n", encoding="utf-8")
    return folder


def _collapsed(tiny_student, out):
    """The tiny student with every row of its embedding tables set to the first: each token
    enters as the same (nonzero) vector at every position, so every sentence leaves as one
    point."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(tiny_student, device="cpu")
    emb = st[0].auto_model.embeddings
    with torch.no_grad():
        for table in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
            table.weight.copy_(table.weight[:1].expand_as(table.weight))
    st.save(str(out))
    return str(out)


def results_of(doc, key):
    return doc["pairs"]["results"][key]["mean"]


def _report(capsys, tmp_path, model, tiny_teacher, tiny_student, *extra):
    out = tmp_path / "report.html"
    argv = ["report", model, "--tatoeba", str(_tatoeba(tmp_path)), "--langs", "de"]
    argv += ["--teacher", tiny_teacher, "--baseline", tiny_student, "--out", str(out), *extra]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return out, json.loads(out.with_suffix(".json").read_text(encoding="utf-8")), captured


def test_report_is_one_offline_page_with_its_baselines(
    tmp_path, capsys, tiny_teacher, tiny_student, isolated_cache
):
    sts = write_sts(tmp_path / "sts")
    out, doc, captured = _report(
        capsys, tmp_path, tiny_student, tiny_teacher, tiny_student, "--sts", str(sts)
    )
    page = out.read_text(encoding="utf-8")
    assert "kd: wrote" in captured.out
    # self-contained: no script, no stylesheet or image fetched, no link leaving the page
    assert "<script" not in page and "<link" not in page and " src=" not in page
    assert not re.search(r'href="(?!#)', page)
    assert page.count("<svg") >= 4  # retrieval x2, STS x2, fidelity, collapse
    results = doc["pairs"]["results"]
    assert set(results) == {"teacher", "student_untrained", "model"}
    assert set(results["model"]) == {"de", "mean"} and doc["pairs"]["n"] == {"de": 7}
    assert set(doc["sections"]) == {
        "overview",
        "retrieval",
        "sts",
        "fidelity",
        "bias",
        "mining",
        "collapse",
        "per_language",
    }
    # each translation is its English sentence's text: found first in the mixed pool too
    assert doc["bias"]["model"]["mean"]["mixed_accuracy"] == 1.0
    assert doc["mining"]["model"]["mean"]["xsim_error"] == 0.0
    # the student is the untrained model itself: the same numbers, every verdict "same"
    assert results["model"] == results["student_untrained"]
    found = doc["sections"]["overview"]["verdicts"]["model"]
    assert found and {v["verdict"] for v in found.values()} == {"same"}
    assert doc["sts"]["model"]["mean"] == doc["sts"]["student_untrained"]["mean"]
    assert results["teacher"]["de"]["english_fidelity"] == pytest.approx(1.0, abs=1e-5)
    assert not doc["sections"]["collapse"]["checks"]["model"]["alarm"]
    assert "<b>collapsing</b>" not in page


def test_a_collapsed_student_raises_the_alarm_and_is_worse(
    tmp_path, capsys, tiny_teacher, tiny_student, isolated_cache
):
    collapsed = _collapsed(tiny_student, tmp_path / "collapsed")
    out, doc, _ = _report(
        capsys, tmp_path, collapsed, tiny_teacher, tiny_student, "--against", tiny_student
    )
    check = doc["sections"]["collapse"]["checks"]["model"]
    assert check["unrelated_cosine"] == pytest.approx(1.0, abs=1e-4)
    assert check["alarm"] and not doc["sections"]["collapse"]["checks"]["against"]["alarm"]
    assert results_of(doc, "student_untrained")["student_mean_accuracy"] == 1.0
    found = doc["sections"]["overview"]["verdicts"]
    assert found["model"]["student_mean_accuracy"]["verdict"] == "worse"
    assert found["against"]["student_mean_accuracy"]["verdict"] == "same"
    page = out.read_text(encoding="utf-8")
    assert "is <b>collapsing</b>" in page and "worse than the untrained student" in page
    # one point for every sentence: mining cannot tell the pairs apart
    assert doc["mining"]["model"]["mean"]["xsim_error"] > 0.5
    assert doc["mining"]["against"]["mean"]["xsim_error"] == 0.0


def test_sections_are_small_functions_that_can_be_left_out():
    results = {
        "models": {"teacher": "t", "student_untrained": "u", "model": "<m>"},
        "pairs": {
            "source": "x",
            "n": {"de": 2},
            "results": {
                k: {lang: {"student_mean_accuracy": a} for lang in ("de", "mean")}
                for k, a in (("teacher", 0.2), ("student_untrained", 0.9), ("model", 0.5))
            },
        },
        "sts": None,
        "seconds": 1.0,
    }
    doc, page = render(results)
    assert "sts" not in doc["sections"] and "fidelity" not in doc["sections"]
    assert "&lt;m&gt;" in page and "<m>" not in page  # names are escaped
    assert doc["sections"]["overview"]["verdicts"]["model"]["student_mean_accuracy"] == {
        "value": 0.5,
        "baseline": 0.9,
        "verdict": "worse",
    }
    assert len(SECTIONS) == 8 and "bias" not in doc["sections"]  # no bias measured
    assert svg_bars(["de"], {"model": [None]}).count("<rect") == 0


def test_a_run_metrics_file_makes_the_same_page():
    per = {"de": {"student_mean_accuracy": 0.8}, "mean": {"student_mean_accuracy": 0.8}}
    metrics = {
        "config": {"teacher": "t", "student": "u", "eval_pairs": 50},
        "teacher": per,
        "student_untrained": per,
        "student_distilled": per,
    }
    results = results_from_run(metrics, "mine", "the run's held-out pairs")
    assert set(results["pairs"]["results"]) == {"teacher", "student_untrained", "model"}
    assert results["pairs"]["n"] == {"de": 50}
    with pytest.raises(ValueError, match="no evaluation"):
        results_from_run({"teacher": per}, "mine", "x")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--out", "{tmp}/r.txt"], "name an .html file"),
        (["--out", "{tmp}/missing/r.html"], "does not exist"),
        (["--out", "{tmp}/r.html", "--max-pairs", "-1"], "--max-pairs"),
        (["--out", "{tmp}/r.html", "--langs", "xx-not"], ""),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, tiny_teacher, tiny_student, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = main(
        ["report", tiny_student, "--tatoeba", str(_tatoeba(tmp_path)), "--baseline", tiny_student]
        + ["--teacher", tiny_teacher, *argv]
    )
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("kd: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0]


def test_missing_folder_and_model_are_one_line(tmp_path, capsys, tiny_teacher, tiny_student):
    out = str(tmp_path / "r.html")
    rc = main(["report", tiny_student, "--tatoeba", str(tmp_path / "none"), "--out", out])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("kd: error:") == 1 and "Traceback" not in err
    rc = main(
        ["report", str(tmp_path / "nomodel"), "--tatoeba", str(_tatoeba(tmp_path)), "--out", out]
        + ["--baseline", tiny_student, "--teacher", tiny_teacher, "--langs", "de"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("kd: error:") == 1 and "Traceback" not in err


def test_the_app_offers_the_report_of_the_visitors_student(
    tmp_path, monkeypatch, tiny_teacher, tiny_student, allow_tiny_models, isolated_cache
):
    import gradio as gr

    from tests.test_app import _form, _pairs_file
    from webapp import settings
    from webapp.distill import run_distillation
    from webapp.report import student_report
    from webapp.session import Visitor

    monkeypatch.setattr(settings, "WORK_ROOT", tmp_path / "visitors")
    visitor = Visitor()
    with pytest.raises(gr.Error, match="distill a student first"):
        student_report(visitor)
    pairs = _pairs_file(tmp_path / "fr.tsv")
    status = list(run_distillation(*_form(tiny_teacher, tiny_student, pairs), visitor))[-1][0]
    assert "Against the untrained student: " in status  # the verdicts, in the run's results

    # a dev folder with the run's language: measured on it, capped at REPORT_PAIRS a language
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "tatoeba.fra-eng.fra").write_text("\n".join(DE) + "\n", encoding="utf-8")
    (dev / "tatoeba.fra-eng.eng").write_text("\n".join(EN) + "\n", encoding="utf-8")
    monkeypatch.setattr(settings, "REPORT_TATOEBA", dev)
    monkeypatch.setattr(settings, "REPORT_PAIRS", 5)
    page = student_report(visitor)
    doc = json.loads(Path(page).with_suffix(".json").read_text(encoding="utf-8"))
    assert Path(page).parent == Path(visitor.student_dir).parent and page.endswith(".html")
    assert doc["pairs"]["n"] == {"fr": 5} and doc["seconds"] is not None
    assert set(doc["pairs"]["results"]) == {"teacher", "student_untrained", "model"}
    assert str(tmp_path) not in doc["models"]["model"]  # no server path in the download

    # no dev folder on the server: the run's own held-out measurements, no model pass
    monkeypatch.setattr(settings, "REPORT_TATOEBA", tmp_path / "none")
    doc = json.loads(Path(student_report(visitor)).with_suffix(".json").read_text())
    assert doc["pairs"]["source"] == "the run's own held-out pairs"
    assert doc["pairs"]["results"]["model"] == visitor.metrics["student_distilled"]


def test_the_apps_report_keeps_sts_for_the_languages_that_have_it(tmp_path, monkeypatch):
    """A run in de and fr on a server whose STS set has no fr (as stsb-multi has no ar or tr):
    the page keeps de's STS instead of dropping STS altogether."""
    from tests.test_sts import TINY
    from webapp import report, settings

    folder = _tatoeba(tmp_path)
    (folder / "tatoeba.fra-eng.fra").write_text("merci\nbonjour\n", encoding="utf-8")
    (folder / "tatoeba.fra-eng.eng").write_text("thank you\ngood morning\n", encoding="utf-8")
    sts = write_sts(tmp_path / "sts", {lang: TINY[lang] for lang in ("en", "de")})
    monkeypatch.setattr(settings, "REPORT_TATOEBA", folder)
    monkeypatch.setattr(settings, "REPORT_STS", sts)
    sets, found = report._dev_sets(["de", "fr"])
    assert set(sets) == {"de", "fr"}
    assert "de" in found and "fr" not in found
