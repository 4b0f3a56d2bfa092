"""The pre-built student in every tab, and students brought back to the app as deltas."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import gradio as gr
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from kd.models.delta import MANIFEST  # noqa: E402
from kd.train.run import distill  # noqa: E402
from tests.test_train import _cfg  # noqa: E402
from webapp import settings  # noqa: E402
from webapp.aligned import aligned_space  # noqa: E402
from webapp.compare import compare  # noqa: E402
from webapp.prebuilt import prebuilt_note  # noqa: E402
from webapp.search import search  # noqa: E402
from webapp.session import Visitor  # noqa: E402
from webapp.student_zip import load_student_zip, zip_student  # noqa: E402

TEXT = "the cat sits\nle chat est\ngood morning\nhello friend"
LABEL = settings.MODEL_LABELS["prebuilt"]
# What `kd eval --json` writes, trimmed to the means the page reads (made-up numbers: this
# checks that the page shows what the file says, not how good any student is).
EVAL = {
    "results": {
        "student_distilled": {
            "mean": {
                "cross_mean_accuracy": 0.812,
                "english_fidelity": 0.734,
                "student_mean_accuracy": 0.901,
            }
        },
        "student_untrained": {
            "mean": {"cross_mean_accuracy": 0.004, "student_mean_accuracy": 0.899}
        },
    }
}


@pytest.fixture(scope="module")
def tiny_delta(tmp_path_factory, tiny_teacher, tiny_student) -> Path:
    """A tiny run of the tiny models saved as a delta, with a dev-set score beside it."""
    tmp = tmp_path_factory.mktemp("prebuilt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KD_CACHE", str(tmp / "cache"))
        result = distill(_cfg(tmp, tiny_teacher, tiny_student, save="delta", epochs=1))
    (result.out / "eval_tatoeba.json").write_text(json.dumps(EVAL), encoding="utf-8")
    return result.out


@pytest.fixture
def prebuilt(monkeypatch, tiny_delta, allow_tiny_models) -> Path:
    monkeypatch.setenv("KD_PREBUILT", str(tiny_delta))
    return tiny_delta


def test_compare_shows_the_prebuilt_student_with_its_own_teacher(
    prebuilt, tiny_teacher, tiny_student, monkeypatch
):
    fig, table = compare(TEXT, tiny_teacher, tiny_student, None)
    names = [t.name for t in fig.data if t.type == "heatmap"]
    assert names == ["teacher", "student, untrained", LABEL]
    assert f"cos ({LABEL})" in table.columns
    # With another teacher its vectors would live in a space the page does not show: left out.
    fig, _ = compare(TEXT, tiny_student, tiny_student, None)
    assert LABEL not in [t.name for t in fig.data]
    # Turned off, it is gone.
    monkeypatch.setenv("KD_PREBUILT", "")
    fig, _ = compare(TEXT, tiny_teacher, tiny_student, None)
    assert LABEL not in [t.name for t in fig.data]


def test_the_prebuilt_note_gives_the_measured_numbers(prebuilt):
    note = prebuilt_note()
    assert LABEL in note and "81.2%" in note and "0.73" in note and "0.90" in note


def test_search_and_aligned_show_the_prebuilt_student(prebuilt, tiny_teacher, tiny_student):
    notes, _t, _u, pre, own = search("the cat", 3, None, tiny_teacher, tiny_student, None)
    assert len(pre) == 3 and len(own) == 0
    assert f"*{LABEL}* searched the teacher's own index" in notes
    fig, _md, table, space = aligned_space(
        settings.SOURCES[0],
        None,
        None,
        "fr",
        4,
        "pca",
        ["teacher", "untrained", "prebuilt"],
        tiny_teacher,
        tiny_student,
        None,
    )
    assert LABEL in {t.name for t in fig.data} | set(table.columns)
    steps = [s.label for s in space.layout.sliders[0].steps]
    assert steps == ["student, untrained", "student, pre-built"]


def _zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return path


def test_a_delta_zip_is_taken_back(tiny_delta, tmp_path, tiny_teacher, tiny_student, monkeypatch):
    from tests.test_security import _allow_models

    _allow_models(monkeypatch, Path(tiny_teacher).parent, Path(tiny_student).parent)
    run = shutil.copytree(tiny_delta, tmp_path / "run-1")
    archive = Path(zip_student(run))
    assert archive.stat().st_size < settings.MAX_STUDENT_ZIP_BYTES <= 50 * 1024 * 1024
    visitor = Visitor()
    status, _ = load_student_zip(str(archive), visitor)
    assert "Student loaded" in status and "32-d" in status
    fig, _ = compare(TEXT, tiny_teacher, tiny_student, visitor)
    assert [t.name for t in fig.data][-1] == "student, distilled"


def test_a_delta_whose_base_the_server_refuses_is_refused(
    tiny_delta, tmp_path, tiny_teacher, tiny_student, monkeypatch
):
    """A manifest must not make the server load a model the page would refuse by name."""
    from tests.test_security import _allow_models

    _allow_models(monkeypatch, Path(tiny_teacher).parent, Path(tiny_student).parent)
    run = shutil.copytree(tiny_delta, tmp_path / "evil")
    outside = shutil.copytree(tiny_student, tmp_path / "elsewhere" / "st")
    manifest = json.loads((run / MANIFEST).read_text())
    manifest["base"] = str(outside)
    (run / MANIFEST).write_text(json.dumps(manifest))
    visitor = Visitor()
    with pytest.raises(gr.Error) as err:
        load_student_zip(str(_zip_folder(run, tmp_path / "evil.zip")), visitor)
    message = str(err.value.message if hasattr(err.value, "message") else err.value)
    assert "a model this server does not load" in message and "\n" not in message, message
    assert visitor.student_dir is None
