"""Bitext mining: margin scoring on built vectors, the built test, ``kd mine`` and the Mine tab."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from kd.cli import main
from kd.evaluate.mining import (
    STRATEGIES,
    Mined,
    best_threshold,
    build_tests,
    knn,
    margin_candidates,
    mine,
    mining_benchmark,
    pair_scores,
    read_sentences,
    xsim_error,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "tatoeba-dev").is_dir()
    or not (SHARED_DATA / "news-english" / "en.txt").is_file()
    or not (SHARED_DATA / "everyday-parallel").is_dir(),
    reason="needs ../shared/data (tatoeba-dev, news-english, everyday-parallel)",
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _planted(n_pairs=60, n_src_extra=140, n_tgt_extra=240, d=48, noise=0.35, seed=0):
    """Source and target vectors: ``n_pairs`` noisy copies planted among random distractors on
    both sides, shuffled, all shifted by one shared vector (as real models put every sentence
    in one cone: cosines mostly positive); returns (src, tgt, gold)."""
    rng = np.random.default_rng(seed)
    shift = rng.normal(size=d)
    base = rng.normal(size=(n_pairs, d))
    src = np.vstack([base + noise * rng.normal(size=base.shape), rng.normal(size=(n_src_extra, d))])
    tgt = np.vstack([base + noise * rng.normal(size=base.shape), rng.normal(size=(n_tgt_extra, d))])
    src, tgt = src + shift, tgt + shift
    ps, pt = rng.permutation(len(src)), rng.permutation(len(tgt))
    src_at, tgt_at = np.argsort(ps), np.argsort(pt)  # old index -> new
    gold = {(int(src_at[i]), int(tgt_at[i])) for i in range(n_pairs)}
    return _unit(src[ps]).astype(np.float32), _unit(tgt[pt]).astype(np.float32), gold


# ---- margin scoring on built vectors ----------------------------------------------------------
def test_knn_matches_a_full_sort():
    src, tgt, _ = _planted()
    sims, idx = knn(src, tgt, 20)
    full = src @ tgt.T
    expected = np.argsort(-full, axis=1)[:, :20]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(full, expected, axis=1), rtol=1e-6)


def test_margin_is_the_papers_ratio():
    src, tgt, _ = _planted(n_pairs=5, n_src_extra=3, n_tgt_extra=4)
    forward, backward = margin_candidates(src, tgt, k=3)
    cos = src @ tgt.T
    src_mean = np.sort(cos, axis=1)[:, ::-1][:, :3].mean(axis=1)
    tgt_mean = np.sort(cos.T, axis=1)[:, ::-1][:, :3].mean(axis=1)
    full = cos / ((src_mean[:, None] + tgt_mean[None, :]) / 2)
    for m in forward:  # each source's best among its 3 nearest targets
        near = np.argsort(-cos[m.src])[:3]
        assert m.tgt == near[np.argmax(full[m.src, near])]
        assert m.margin == pytest.approx(full[m.src, m.tgt], rel=1e-5)
    for m in backward:
        assert m.margin == pytest.approx(full[m.src, m.tgt], rel=1e-5)


@pytest.mark.parametrize("strategy", ["max", "intersection"])
def test_planted_pairs_are_found_among_distractors(strategy):
    src, tgt, gold = _planted()
    found = mine(src, tgt, threshold=1.2, strategy=strategy)
    scores = pair_scores(found, gold)
    assert scores["precision"] >= 0.95, scores
    assert scores["recall"] >= 0.9, scores


def test_the_margin_sees_past_a_hub_that_fools_the_cosine():
    """Every source leans towards one target (a hub: a generic sentence close to everything),
    which wins each source's raw cosine comparison against its true translation; the margin
    discounts the hub by how close it is to everything else."""
    rng = np.random.default_rng(3)
    d, n = 64, 40
    hub = np.zeros((1, d))
    hub[0, 0] = 1.0
    own = rng.normal(size=(n, d))
    own[:, 0] = 0.0  # each sentence's own content, orthogonal to the hub
    own = _unit(own)
    noise = rng.normal(size=own.shape) * 0.5 / np.sqrt(d)
    noise[:, 0] = 0.0
    src = _unit(hub + own).astype(np.float32)
    tgt = np.vstack([_unit(own + noise), hub]).astype(np.float32)  # the hub is target n
    assert ((src @ tgt.T).argmax(axis=1) == n).all()  # the cosine picks the hub every time
    forward, _ = margin_candidates(src, tgt, k=4)
    assert [m.tgt for m in forward] == list(range(n))  # the margin picks every translation


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_swapping_the_lists_swaps_the_pairs(strategy):
    """The margin is the same seen from either side: mining tgt -> src gives the same pairs
    with the same margins (forward and backward trade places)."""
    src, tgt, _ = _planted(n_pairs=30, n_src_extra=50, n_tgt_extra=90)
    swapped = {"forward": "backward", "backward": "forward"}.get(strategy, strategy)
    one = {(m.src, m.tgt): m.margin for m in mine(src, tgt, threshold=0, strategy=strategy)}
    two = {(m.tgt, m.src): m.margin for m in mine(tgt, src, threshold=0, strategy=swapped)}
    assert one.keys() == two.keys()
    for key, margin in one.items():
        assert two[key] == pytest.approx(margin, rel=1e-5)


def test_max_and_intersection_use_each_sentence_once_and_the_threshold_cuts():
    src, tgt, _ = _planted()
    for strategy in ("max", "intersection"):
        pairs = mine(src, tgt, threshold=0, strategy=strategy)
        assert len({m.src for m in pairs}) == len(pairs) == len({m.tgt for m in pairs})
    everything = mine(src, tgt, threshold=0)
    cut = mine(src, tgt, threshold=1.1)
    assert cut == [m for m in everything if m.margin >= 1.1]
    assert 0 < len(cut) < len(everything)
    assert [m.margin for m in everything] == sorted((m.margin for m in everything), reverse=True)


def test_scores_by_hand():
    gold = {(0, 0), (1, 1), (2, 2), (3, 3)}
    mined = [Mined(0, 0, 1.5), Mined(1, 1, 1.3), Mined(2, 3, 1.2), Mined(3, 3, 1.0)]
    s = pair_scores(mined, gold)
    assert (s["precision"], s["recall"], s["mined"]) == (0.75, 0.75, 4)
    assert s["f1"] == pytest.approx(0.75)
    threshold, f1 = best_threshold(mined, gold)  # top 2: P 1, R .5 -> .667; top 4: .75
    assert (threshold, f1) == (1.0, pytest.approx(0.75))
    forward = [Mined(0, 0, 1), Mined(1, 2, 1), Mined(2, 2, 1)]
    assert xsim_error(forward, {0: 0, 1: 1, 2: 2}) == pytest.approx(1 / 3)


def test_the_sweep_picks_one_threshold_and_scores_each_language_left_out():
    from kd.evaluate.mining import _sweep_means

    per_lang = {
        "a": {"f1_by_threshold": [0.5, 0.9]},
        "b": {"f1_by_threshold": [0.8, 0.6]},
        "c": {"f1_by_threshold": [0.7, 0.7]},
    }
    mean: dict = {}
    _sweep_means(per_lang, mean, [1.0, 1.1])
    assert mean["sweep_threshold"] == 1.1 and mean["sweep_f1"] == pytest.approx(2.2 / 3)
    # a's threshold comes from b and c (best: 1.0), b's from a and c (1.1), c's from a and b (1.1)
    assert [per_lang[x]["loo_threshold"] for x in "abc"] == [1.0, 1.1, 1.1]
    assert [per_lang[x]["loo_f1"] for x in "abc"] == [0.5, 0.6, 0.7]
    assert mean["loo_f1"] == pytest.approx(0.6)


def test_the_default_threshold_is_the_models_own():
    from kd.evaluate.mining import (
        DEFAULT_THRESHOLD,
        E5_THRESHOLD,
        PREBUILT_THRESHOLD,
        default_threshold,
    )
    from kd.models.registry import prebuilt_dir

    assert default_threshold("intfloat/multilingual-e5-small") == E5_THRESHOLD
    assert default_threshold("some/other-model") == DEFAULT_THRESHOLD
    if prebuilt_dir() is not None:
        assert default_threshold(str(prebuilt_dir())) == PREBUILT_THRESHOLD
        assert default_threshold(str(prebuilt_dir()) + "/") == PREBUILT_THRESHOLD


def test_bad_vectors_and_settings_say_what_to_change():
    v = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="empty"):
        mine(v[:0], v)
    with pytest.raises(ValueError, match="widths"):
        mine(v, np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="strategy"):
        mine(v, v, strategy="best")
    with pytest.raises(ValueError, match="k must be"):
        mine(v, v, k=0)


# ---- reading files ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"", ("src.txt", "empty file")),
        (b"\n  \n\n", ("src.txt", "only blank lines")),
        (b"PK\x03\x04\x00\x00binary", ("src.txt", "binary data")),
        (b"ok\ncaf\xe9\n", ("src.txt:2", "UTF-8")),
        (b"one\ntwo\nthree\nfour\n", ("src.txt", "more than 3 sentences")),
    ],
)
def test_read_sentences_refuses_bad_files_in_one_line(tmp_path, content, fragments):
    path = tmp_path / "src.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        read_sentences(path, max_lines=3)
    assert "\n" not in str(err.value)
    for fragment in fragments:
        assert fragment in str(err.value)


# ---- the built test -----------------------------------------------------------------------------
@needs_shared
def test_the_built_test_plants_tatoeba_pairs_among_distractors():
    from kd.data.pairs import english_key, read_tatoeba
    from kd.evaluate.mining import _foreign_distractors

    tests = build_tests(SHARED_DATA, ["de", "ja"], 50, 100, 150)
    tatoeba = {
        lang: {p.other: p.en for p in pairs}
        for lang, pairs in read_tatoeba(SHARED_DATA / "tatoeba-dev", ["de", "ja"]).items()
    }
    for test in tests:
        assert (len(test.src), len(test.tgt), len(test.gold)) == (150, 200, 50)
        for i, j in test.gold:  # every planted pair is a Tatoeba pair
            assert tatoeba[test.lang][test.src[i]] == test.tgt[j]
        planted_src = {i for i, _ in test.gold}
        en_keys = {english_key(s) for s in test.tgt}
        assert len(en_keys) == 200  # no English sentence twice
        english_of = dict(
            (x, key)
            for key, x in _foreign_distractors(SHARED_DATA / "everyday-parallel", test.lang)
        )
        for i, x in enumerate(test.src):  # a distractor is no Tatoeba sentence of the language
            if i not in planted_src:
                assert x not in tatoeba[test.lang]
                assert english_of[x] not in en_keys  # and its translation is not in the pool
        assert sorted(i for i, _ in test.gold) != list(range(50))  # shuffled
    assert tests[0].tgt != tests[1].tgt  # each language's planted English differs


@needs_shared
def test_the_benchmark_scores_an_encoder_that_knows_the_answers():
    """An encoder that gives each planted pair one shared random vector and every other sentence
    its own mines exactly the planted pairs; one that ignores the text finds nothing right."""
    tests = build_tests(SHARED_DATA, ["de"], 40, 60, 80, seed=1)
    pair_of = {}
    for test in tests:
        for i, j in test.gold:
            pair_of[test.src[i]] = pair_of[test.tgt[j]] = f"pair {i}"

    def oracle(texts):
        return np.stack([_vector(pair_of.get(t, t)) for t in texts])

    result = mining_benchmark(oracle, SHARED_DATA, ["de"], planted=40, foreign_distractors=60,
                              english_distractors=80, seed=1, threshold=1.5,
                              sweep=[1.0, 1.5])  # fmt: skip
    de = result["per_lang"]["de"]
    assert (de["precision"], de["recall"], de["f1"], de["xsim_error"]) == (1.0, 1.0, 1.0, 0.0)
    assert (de["planted"], de["src_size"], de["tgt_size"]) == (40, 100, 120)
    assert result["mean"]["f1"] == 1.0 and result["settings"]["strategy"] == "max"
    assert result["mean"]["sweep_f1"] == 1.0 and de["f1_by_threshold"][0] < 1.0

    blind = mining_benchmark(lambda texts: np.stack([_vector(str(len(t) % 7)) for t in texts]),
                             SHARED_DATA, ["de"], planted=40, foreign_distractors=60,
                             english_distractors=80, seed=1, threshold=1.5)  # fmt: skip
    assert blind["mean"]["f1"] < 0.2
    assert blind["mean"]["xsim_error"] > 0.7


def _vector(key: str, d: int = 64) -> np.ndarray:
    """A random vector fixed by ``key``."""
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=d).astype(np.float32)


# ---- kd mine ------------------------------------------------------------------------------------
SENTENCES = [
    "the cat sits on the mat",
    "a red dog runs",
    "good morning friend",
    "thank you and good night",
    "la maison est grande",
    "der hund ist klein",
    "die katze sitzt auf der matte",
    "hello world",
    "the big blue house",
    "le chat rouge est petit",
]


def _expected(model: str, src: list[str], tgt: list[str], threshold: float):
    """(source, target, margin) that mining the model's own vectors gives."""
    from kd.models.encoder import Encoder

    encoder = Encoder.load(model, "cpu")
    pairs = mine(encoder.encode(src), encoder.encode(tgt), threshold=threshold)
    return [(src[m.src], tgt[m.tgt], m.margin) for m in pairs]


def test_kd_mine_writes_the_pairs_of_the_models_vectors(tmp_path, capsys, tiny_student):
    """Two shuffles of one list with an extra line each: the file holds what mining the model's
    vectors gives (source, target, margin to 4 decimals, best first), and a sentence met on both
    sides (identical vectors) is among its pairs."""
    src_lines = [*SENTENCES[:8][::-1], SENTENCES[8]]
    # upper case: the tiny model's tokenizer lowers it (the same vectors), the file keeps it (a
    # source and a target are told apart in the output)
    tgt_lines = [s.upper() for s in [*SENTENCES[3:8], SENTENCES[9], *SENTENCES[:3]]]
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("\n".join(src_lines) + "\n\n", encoding="utf-8")  # a blank line: skipped
    tgt.write_text("\n".join(tgt_lines) + "\n", encoding="utf-8")
    out = tmp_path / "pairs.tsv"
    argv = ["mine", str(src), str(tgt), "--out", str(out), "--model", tiny_student]
    assert main([*argv, "--threshold", "1.0"]) == 0
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    expected = _expected(tiny_student, src_lines, tgt_lines, 1.0)
    assert [(a, b) for a, b, _ in rows] == [(a, b) for a, b, _ in expected]
    assert [float(m) for _, _, m in rows] == [round(m, 4) for _, _, m in expected]
    assert any(a.upper() == b for a, b, _ in rows)
    assert f"{len(rows)} pairs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"", ("empty file",)),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", ("binary data",)),
        (b"hello world\n\xff\xfe broken\n", ("bad.txt:2", "UTF-8")),
        (b"a\n" * 50, ("more than 20 sentences",)),
    ],
)
def test_kd_mine_bad_files_give_one_line_naming_the_file(
    tmp_path, capsys, tiny_student, content, fragments
):
    bad, good = tmp_path / "bad.txt", tmp_path / "good.txt"
    bad.write_bytes(content)
    good.write_text("hello world\n", encoding="utf-8")
    out = tmp_path / "pairs.tsv"
    for argv in ([str(bad), str(good)], [str(good), str(bad)]):
        rc = main(["mine", *argv, "--out", str(out), "--model", tiny_student, "--max-lines", "20"])
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.startswith("kd: error:")]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert str(bad) in lines[0]
        for fragment in fragments:
            assert fragment in lines[0]
    assert not out.exists()


# ---- the Mine tab -------------------------------------------------------------------------------
def test_the_mine_tab_pairs_the_lists(tiny_student, isolated_cache, allow_tiny_models, tmp_path):
    from webapp.mining import RESULT_COLUMNS, mine_lists
    from webapp.session import Visitor

    src_lines = [*SENTENCES[:8], SENTENCES[8]]
    tgt_lines = [*SENTENCES[:8][::-1], SENTENCES[9]]
    upload = tmp_path / "targets.txt"
    upload.write_text("\n".join(tgt_lines) + "\n", encoding="utf-8")
    summary, table = mine_lists(
        "\n".join(src_lines), "ignored: the upload wins", None, str(upload), "untrained", 1.0,
        tiny_student, Visitor(),
    )  # fmt: skip
    assert list(table.columns) == RESULT_COLUMNS
    expected = _expected(tiny_student, src_lines, tgt_lines, 1.0)
    assert list(zip(table["source"], table["target"], strict=True)) == [
        (a, b) for a, b, _ in expected
    ]
    assert list(table["margin"]) == [round(m, 3) for _, _, m in expected]
    assert f"**{len(table)}** pairs" in summary


@pytest.mark.parametrize(
    ("src", "tgt", "file", "which", "message"),
    [
        ("", "hello world", None, "untrained", "source list is empty"),
        ("hello world", "a\n" * 30, None, "untrained", "at most 20 a list"),
        ("hello world", "x" * 700, None, "untrained", "at most 600 in both lists"),
        ("y" * 350, "z" * 350, None, "untrained", "the two lists hold 700 characters"),
        ("hello world", "hello", b"\x00\x01\x02", "untrained", "binary data"),
        ("hello world", "hello", b"caf\xe9\n", "untrained", "not valid UTF-8"),
        ("hello world", "hello", b"ok\n" * 30, "untrained", "more than 20"),
        ("hello world", "hello world", None, "distilled", "no distilled student"),
    ],
)
def test_bad_mine_input_is_one_gr_error(
    src, tgt, file, which, message, tiny_student, isolated_cache, allow_tiny_models, tmp_path,
    monkeypatch,
):  # fmt: skip
    from webapp import settings
    from webapp.mining import mine_lists
    from webapp.session import Visitor

    monkeypatch.setattr(settings, "MINE_MAX_LINES", 20)
    monkeypatch.setattr(settings, "MINE_MAX_CHARS", 600)
    upload = None
    if file is not None:
        upload = tmp_path / "list.txt"
        upload.write_bytes(file)
    with pytest.raises(gr.Error) as err:
        mine_lists(src, tgt, None, str(upload) if upload else None, which, 1.06, tiny_student,
                   Visitor())  # fmt: skip
    assert message in err.value.message
    assert str(tmp_path) not in err.value.message  # the upload named by its file name only


def test_the_page_states_the_cap():
    from webapp import settings
    from webapp.mining import limits_note

    note = limits_note()
    assert f"{settings.MINE_MAX_LINES:,} sentences a list" in note
    assert f"{settings.MINE_MAX_CHARS:,} characters" in note


def test_held_out_xsim_pools_every_languages_english():
    """kd report's mining error: a translation must find its own English sentence among every
    language's English (an English sentence shared by two languages is one target)."""
    from kd.evaluate.mining import held_out_xsim

    e = np.eye(4, dtype=np.float32)
    sets = {"de": (["a", "b"], ["A", "B"]), "fr": (["b", "c"], ["B", "C"])}
    # de's translations land on their English; fr's two land on each other's
    vectors = {"de": (e[[0, 1]], e[[0, 1]]), "fr": (e[[1, 2]], e[[2, 1]])}
    found = held_out_xsim(sets, vectors, k=1)
    assert found["pool"] == 3
    assert found["per_lang"]["de"]["xsim_error"] == 0.0
    assert found["per_lang"]["fr"]["xsim_error"] == 1.0
    assert found["mean"]["xsim_error"] == 0.5
