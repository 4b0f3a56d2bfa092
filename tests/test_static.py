"""Static students (kd.models.static, kd export --static) on tiny random models: the folder plain
sentence-transformers loads, the fit towards the teacher, the vocabulary cut, kd's loaders."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from kd.cli import main
from kd.config import StaticSettings, TrainConfig
from kd.models.encoder import Encoder
from kd.models.registry import is_static
from kd.models.static import (
    MANIFEST,
    StaticEncoder,
    _run_config,
    _sample,
    build_static,
    cut_tokenizer,
    load_encoder,
)
from tests.conftest import WORDS

EN = WORDS[:17]
FR = WORDS[17:30]


def _pairs(path: Path, n: int = 200, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        k = rng.randint(3, 7)
        lines.append(
            " ".join(rng.choice(EN) for _ in range(k))
            + "\t"
            + " ".join(rng.choice(FR) for _ in range(k))
        )
    path.write_text("en\tfr\n" + "\n".join(dict.fromkeys(lines)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_teacher, tiny_student) -> Path:
    """The tiny student as a finished run's folder: its kd_config.json names the teacher and
    the data a static build reads."""
    root = tmp_path_factory.mktemp("static-run")
    student = root / "student"
    shutil.copytree(tiny_student, student)
    cfg = TrainConfig(
        out=str(student),
        teacher=tiny_teacher,
        student=tiny_student,
        langs=["fr"],
        max_pairs=0,
        english_rows=0,
        data=[str(_pairs(root / "fr.tsv"))],
        eval_pairs=0,
    )
    (student / "kd_config.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    return student


@pytest.fixture(scope="module")
def built(run, tmp_path_factory) -> tuple[Path, Path]:
    """The same static student built twice: the start alone, and fitted."""
    root = tmp_path_factory.mktemp("static")
    start = build_static(str(run), root / "start", settings=StaticSettings(iterations=0))
    fitted = build_static(str(run), root / "fitted", device="cpu")
    return start.out, fitted.out


def _teacher_cosine(model, teacher: Encoder, data: Path) -> float:
    rows = [line.split("\t") for line in data.read_text(encoding="utf-8").splitlines()[1:]]
    want = teacher.encode([en for en, _ in rows])
    got = model.encode([fr for _, fr in rows])
    return float((want * got).sum(1).mean())


def test_the_folder_loads_in_plain_sentence_transformers(built):
    _, fitted = built
    texts = ["le chat est sur le tapis", "der hund", "the cat", ""]
    plain = SentenceTransformer(str(fitted), device="cpu").encode(texts, convert_to_numpy=True)
    ours = load_encoder(str(fitted)).encode(texts)
    assert isinstance(load_encoder(str(fitted)), StaticEncoder)
    assert is_static(str(fitted))
    np.testing.assert_allclose(ours, plain, atol=1e-6)
    norms = np.linalg.norm(ours[:3], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_the_fit_brings_translations_nearer_the_teacher(built, run, tiny_teacher):
    """Translations (French) embedded by the static student against the teacher's vectors of
    their English side: the fit must beat the start it began from."""
    start, fitted = built
    teacher = Encoder.load(tiny_teacher)
    data = Path(run).parent / "fr.tsv"
    before = _teacher_cosine(load_encoder(str(start)), teacher, data)
    after = _teacher_cosine(load_encoder(str(fitted)), teacher, data)
    assert after > before + 0.05, (before, after)
    held = json.loads((fitted / MANIFEST).read_text())["fit"]["heldout_cosine"]
    assert held["fitted"] > held["start"], held


def test_the_fit_takes_translations_first_and_english_fills_the_rest():
    """A run's data is mostly English: the fit's sample must still be mostly translations, the
    kind that places a language's tokens in the teacher's space."""
    langs = ["en"] * 900 + ["fr"] * 100
    texts = [f"t{i}" for i in range(1000)]
    target = np.arange(1000)
    got, tgt, english = _sample(texts, target, langs, 120, seed=0)
    assert len(got) == 120 and int((~english).sum()) == 80 and int(english.sum()) == 40
    assert [langs[int(t)] == "en" for t in tgt] == english.tolist()
    # Too few translations: English fills up to rows; too few of both: everything, once.
    _, _, english = _sample(texts, target, langs, 600, seed=0)
    assert int((~english).sum()) == 100 and int(english.sum()) == 500
    got, _, _ = _sample(texts, target, langs, 5000, seed=0)
    assert sorted(got) == sorted(texts)
    # The draw is random within each kind, fixed by the seed.
    assert _sample(texts, target, langs, 120, 0)[0] == _sample(texts, target, langs, 120, 0)[0]
    assert _sample(texts, target, langs, 120, 0)[0] != _sample(texts, target, langs, 120, 1)[0]


def test_the_fit_reads_every_pair_of_the_runs_data(run, tmp_path):
    """--static-pairs 0 reads all of the run's --data pairs (the run itself may have sampled
    fewer); a number caps them; a run on the default source keeps its own count."""
    cfg, _ = _run_config(str(run), None, None, None, tmp_path / "o", 0)
    assert cfg.max_pairs == 0 and cfg.data
    cfg, _ = _run_config(str(run), None, None, None, tmp_path / "o", 40)
    assert cfg.max_pairs == 40
    plain = tmp_path / "plain"
    plain.mkdir()
    conf = TrainConfig(out=str(plain), teacher="t", student="s", max_pairs=300, data=[])
    (plain / "kd_config.json").write_text(json.dumps(conf.to_dict()), encoding="utf-8")
    cfg, _ = _run_config(str(plain), None, None, None, tmp_path / "o", 0)
    assert cfg.max_pairs == 300


def test_the_fit_records_what_it_was_fitted_on(built):
    _, fitted = built
    fit = json.loads((fitted / MANIFEST).read_text())["fit"]
    assert fit["translations"] > 0 and fit["shared_part_norm"] > 0
    assert "translations" in fit["heldout_cosine"]


def test_the_vocabulary_keeps_the_seen_tokens_and_their_split(built, tiny_student):
    _, fitted = built
    manifest = json.loads((fitted / MANIFEST).read_text())
    full = Encoder.load(tiny_student).tokenizer.backend_tokenizer.get_vocab_size()
    # The data holds the English and French words only: the German ones are cut.
    assert manifest["full_vocab"] == full
    assert manifest["vocab"] < full
    assert manifest["same_split"] == 1.0
    model = load_encoder(str(fitted))
    vocab = model.tokenizer.get_vocab()
    assert "chat" in vocab and "katze" not in vocab
    assert sorted(vocab.values()) == list(range(len(vocab)))


def test_a_unigram_cut_splits_seen_text_as_before():
    """The cut tokenizer of a Unigram model (e5's kind) keeps the split of every text whose
    pieces it keeps, and its ids count from 0 in the old order."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    pieces = [("<unk>", 0.0), ("▁", -2.0), ("a", -3.0), ("b", -3.0), ("c", -3.0)]
    pieces += [("▁ab", -1.0), ("abc", -1.5), ("▁abc", -0.5), ("bc", -2.5), ("ca", -2.0)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    seen = ["abc ab", "ca bc"]
    ids = [e.ids for e in tok.encode_batch(seen)]
    keep = np.array(sorted({0, 1, 2, 3, 4} | {i for row in ids for i in row}))
    cut = cut_tokenizer(tok, keep)
    new = {int(old): i for i, old in enumerate(keep)}
    assert cut.get_vocab_size() == len(keep) < len(pieces)
    for text, old in zip(seen, ids, strict=True):
        assert cut.encode(text).ids == [new[i] for i in old]


def test_fp16_storage_loads_and_keeps_the_vectors(built, run, tmp_path):
    _, fitted = built
    small = build_static(str(run), tmp_path / "fp16", settings=StaticSettings(dtype="fp16"))
    full_size = sum(p.stat().st_size for p in fitted.rglob("*.safetensors"))
    half_size = sum(p.stat().st_size for p in small.out.rglob("*.safetensors"))
    assert half_size < 0.6 * full_size
    texts = ["le chat est sur le tapis", "la maison rouge"]
    a, b = load_encoder(str(fitted)).encode(texts), load_encoder(str(small.out)).encode(texts)
    assert b.dtype == np.float32
    assert float((a * b).sum(1).min()) > 0.999


def test_kd_loaders_refuse_and_accept_in_one_line(built, tiny_student):
    _, fitted = built
    with pytest.raises(ValueError, match="static model") as err:
        Encoder.load(str(fitted))
    assert "\n" not in str(err.value)
    assert isinstance(load_encoder(tiny_student), Encoder)
    assert not is_static(tiny_student) and not is_static("owner/name")


def test_cli_export_static_then_search_a_teacher_index(run, tiny_teacher, tmp_path, capsys):
    out = tmp_path / "static"
    rc = main(["export", "--model", str(run), "--out", str(out), "--static", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert rc == 0 and "static student written" in printed and is_static(str(out))
    rows = tmp_path / "fr.txt"
    rows.write_text("le chat est sur le tapis\nla maison rouge\nle chien\n", encoding="utf-8")
    db = str(tmp_path / "ix.db")
    assert main(["index", str(rows), "--lang", "fr", "--model", tiny_teacher, "--db", db]) == 0
    capsys.readouterr()
    # The index was made by the teacher; the static student shares its space and may query it.
    rc = main(["search", "le chat", "--db", db, "--model", str(out), "--json", "-k", "3"])
    hits = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(hits) == 3
    npy = str(tmp_path / "v.npy")
    assert main(["embed", "--model", str(out), "--in", str(rows), "--out", npy]) == 0
    vecs = np.load(npy)
    assert vecs.shape == (3, load_encoder(str(out)).dim)


def test_cli_static_mistakes_are_one_line(run, tmp_path, capsys):
    bad = [
        ["--static-rows", "0"],
        ["--static-pairs", "-1"],
        ["--static-ridge", "-1"],
        ["--as", "onnx"],
    ]
    for extra in bad:
        rc = main(["export", "--model", str(run), "--out", str(tmp_path / "x"), "--static", *extra])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("kd: error:")]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "x").exists()


def test_the_app_offers_loads_and_sizes_a_static_model(built, monkeypatch):
    """A folder ``$KD_STATIC`` names is offered, passes the page's model check, loads through
    the model cache, is sized for its budget and skips the fast-path swap (no transformer)."""
    from webapp import model_cache, settings

    _, fitted = built
    monkeypatch.setenv("KD_STATIC", str(fitted))
    monkeypatch.setattr(settings, "FAST_PATH", "auto")  # the swap runs, and must pass it by
    assert settings.static_choices() == [str(fitted.resolve())]
    name = model_cache.checked_model(str(fitted), None)
    model_cache._load_encoder.cache_clear()
    try:
        encoder = model_cache._load_encoder(name)
        assert isinstance(encoder, StaticEncoder)
        assert model_cache.model_bytes(encoder) >= encoder.dim * 4 * 10
        model_cache._take_fast_path(name)
        assert model_cache._load_encoder.peek(name) is encoder
    finally:
        model_cache._load_encoder.cache_clear()
    monkeypatch.setenv("KD_STATIC", str(fitted.parent))  # a folder that is no static model
    assert settings.static_choices() == []
