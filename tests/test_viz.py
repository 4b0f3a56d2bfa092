"""Tests of viz/: projections share one fit, figures carry the right data, bad input is clear.

Fast by default; the tests that fit UMAP (and so pay numba's JIT compile, 20-40 s cold) are
marked ``slow``.
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from viz import figures as F
from viz import metrics as M
from viz import plot_cli
from viz import project as P

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _fresh_cache():
    P.clear_cache()
    yield
    P.clear_cache()


def clustered(n: int, d: int = 16, k: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    return centres[rng.integers(0, k, n)] + 0.3 * rng.normal(size=(n, d))


def parallel_set(n_pairs: int = 5, langs=("en", "de", "fr"), d: int = 16, seed: int = 0):
    """Rows grouped by language; row (lang l, pair i) has pair_id i."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_pairs, d))
    rows_lang, rows_sent, rows_pid, vecs = [], [], [], []
    for lang in langs:
        for i in range(n_pairs):
            rows_lang.append(lang)
            rows_sent.append(f"{lang} sentence {i}")
            rows_pid.append(i)
            vecs.append(base[i] + 0.05 * rng.normal(size=d))
    return np.array(vecs), rows_lang, rows_sent, rows_pid


def frame(models=("teacher", "student"), langs=("en", "de")) -> pd.DataFrame:
    """A hand-made long-form frame: model m, lang l, pair i at x = 10*m + i, y = l."""
    rows = []
    for m, model in enumerate(models):
        for li, lang in enumerate(langs):
            for i in range(2):
                rows.append((10.0 * m + i + li * 0.5, float(li), lang, model, f"{lang} {i}", i))
    return pd.DataFrame(rows, columns=P.FRAME_COLUMNS)


# ----------------------------------------------------------------------------- boundaries


def test_viz_imports_neither_gradio_nor_kd_nor_torch():
    code = (
        "import sys, viz.project, viz.figures, viz.metrics, viz.plot_cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('gradio', 'kd', 'torch', 'umap')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a module, those inside functions included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_kd_core_imports_no_viz():
    """kd/ never imports viz/, not even lazily: ``kd plot``'s glue between them is kd_plot.py."""
    kd_dir = Path(__file__).resolve().parents[1] / "kd"
    offenders = [
        f"kd/{path.relative_to(kd_dir).as_posix()}:{line} imports {module}"
        for path in sorted(kd_dir.rglob("*.py"))
        for line, module in _imported_modules(ast.parse(path.read_bytes(), filename=str(path)))
        if module.split(".")[0] == "viz"
    ]
    assert not offenders, offenders


# ----------------------------------------------------------------------------- projection


def test_pca_frame_is_one_fit_of_the_stacked_vectors():
    v, langs, sents, pids = parallel_set()
    rng = np.random.default_rng(1)
    student = rng.normal(size=v.shape)
    df = P.project_frame({"teacher": v, "student": student}, langs, sents, pids, "pca")
    assert list(df.columns) == ["x", "y", "lang", "model", "sentence", "pair_id"]
    n = len(langs)
    assert len(df) == 2 * n
    assert df["model"].tolist() == ["teacher"] * n + ["student"] * n
    assert df["lang"].tolist() == langs * 2
    assert df["pair_id"].tolist() == pids * 2
    assert df["sentence"].tolist() == sents * 2
    expected = P.project(np.vstack([v, student]), "pca")
    np.testing.assert_array_equal(df[["x", "y"]].to_numpy(), expected)


def test_identical_vectors_under_two_models_get_identical_coordinates_pca():
    v, langs, sents, pids = parallel_set()
    other = np.random.default_rng(3).normal(size=v.shape)
    df = P.project_frame(
        {"teacher": v, "copy": v.copy(), "other": other}, langs, sents, pids, "pca"
    )
    t = df[df.model == "teacher"][["x", "y"]].to_numpy()
    c = df[df.model == "copy"][["x", "y"]].to_numpy()
    o = df[df.model == "other"][["x", "y"]].to_numpy()
    np.testing.assert_allclose(t, c, atol=1e-9)
    assert not np.allclose(t, o)


def test_pca_matches_numpy_svd_of_unit_rows_up_to_sign():
    x = clustered(80, d=12)
    got = P.project(x, "pca")
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    for j in range(2):
        sign = np.sign(ref[:, j] @ got[:, j])
        np.testing.assert_allclose(got[:, j], sign * ref[:, j], atol=1e-5)


def test_pca_is_scale_invariant_per_row():
    x = clustered(30)
    scaled = x * np.random.default_rng(0).uniform(0.1, 10, size=(30, 1))
    np.testing.assert_allclose(P.project(x, "pca"), P.project(scaled, "pca"), atol=1e-5)


def test_cache_returns_the_same_object_without_fitting_again(monkeypatch):
    # How fast a cached redraw is: bench/viz_speed.py (cached_redraw_ms, against a first fit).
    fits = []
    fit = P._pca

    def counted(*args):
        fits.append(args)
        return fit(*args)

    monkeypatch.setattr(P, "_pca", counted)
    x = clustered(3000, d=64)
    first = P.project(x, "pca")
    again = P.project(x.copy(), "pca")
    assert again is first
    assert len(fits) == 1  # equal input is a cache hit: no second fit
    assert not first.flags.writeable
    assert P.cache_info()["entries"] == 1
    P.clear_cache()
    assert P.cache_info()["entries"] == 0
    assert P.project(x, "pca") is not first
    assert len(fits) == 2  # a cleared cache fits again


def test_cache_key_includes_data_and_params_and_is_bounded():
    x = clustered(40)
    a = P.project(x, "pca", seed=0)
    y = x.copy()
    y[0, 0] += 1.0
    assert P.project(y, "pca") is not a
    for i in range(P.CACHE_SIZE + 3):
        P.project(clustered(20, seed=100 + i), "pca")
    assert P.cache_info()["entries"] == P.CACHE_SIZE


def test_exact_knn_matches_brute_force():
    from sklearn.neighbors import NearestNeighbors

    x = P._as_matrix(clustered(150, d=8))
    idx, dist = P._exact_knn(x, 6, chunk=40)
    assert (idx[:, 0] == np.arange(150)).all()
    assert (dist[:, 0] == 0).all()
    nn = NearestNeighbors(n_neighbors=6, metric="cosine", algorithm="brute").fit(x)
    ref_dist, _ = nn.kneighbors(x)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-5)
    assert (np.diff(dist, axis=1) >= -1e-7).all()


@pytest.mark.parametrize(
    ("vectors", "method", "match"),
    [
        (np.zeros((0, 4)), "pca", "at least 2"),
        (np.ones((1, 4)), "pca", "at least 2"),
        (np.ones(5), "pca", "2-D"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), "pca", "NaN or inf"),
        (np.array([[1.0, np.inf], [1.0, 2.0]]), "umap", "NaN or inf"),
        (np.array([[0.0, 0.0], [1.0, 2.0]]), "pca", "all-zero"),
        (np.array([["a", "b"], ["c", "d"]]), "pca", "numeric"),
        (np.ones((5, 4)), "tsne", "unknown projection method 'tsne'; use one of umap, pca"),
        (np.ones((5, 4)), "aligned_umap", "not offered"),
    ],
)
def test_project_bad_input(vectors, method, match):
    with pytest.raises(ValueError, match=match):
        P.project(vectors, method)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_neighbors": 1}, "n_neighbors"),
        ({"min_dist": 2.0}, "min_dist"),
        ({"n_epochs": 0}, "n_epochs"),
    ],
)
def test_project_bad_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.project(clustered(10), "umap", **kwargs)


def test_project_frame_bad_input():
    v, langs, sents, pids = parallel_set()
    with pytest.raises(ValueError, match="empty"):
        P.project_frame({}, langs, sents, pids, "pca")
    with pytest.raises(ValueError, match="one lang, sentence and pair_id"):
        P.project_frame({"t": v}, langs[:-1], sents, pids, "pca")
    with pytest.raises(ValueError, match="same sentences and dimension"):
        P.project_frame({"t": v, "s": v[:, :8]}, langs, sents, pids, "pca")
    with pytest.raises(ValueError, match="same sentences and dimension"):
        P.project_frame({"t": v, "s": v[:-1]}, langs, sents, pids, "pca")
    with pytest.raises(ValueError, match="pair_ids must be integers"):
        P.project_frame({"t": v}, langs, sents, ["a"] * len(langs), "pca")
    bad = v.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="model 's'.*row 3"):
        P.project_frame({"t": v, "s": bad}, langs, sents, pids, "pca")


def test_two_points_pca():
    out = P.project(np.array([[1.0, 0.0], [0.0, 1.0]]), "pca")
    assert out.shape == (2, 2)
    assert np.isfinite(out).all()


@pytest.mark.slow
def test_umap_shared_fit_small():
    assert P.warm_up() >= 0
    assert P.is_warm()
    v, langs, sents, pids = parallel_set(n_pairs=20)  # 60 rows
    other = clustered(60, seed=5)
    df = P.project_frame({"teacher": v, "copy": v, "other": other}, langs, sents, pids, "umap")
    assert df[["x", "y"]].notna().all().all()
    t = df[df.model == "teacher"][["x", "y"]].to_numpy()
    c = df[df.model == "copy"][["x", "y"]].to_numpy()
    np.testing.assert_array_equal(t, c)  # identical vectors -> identical points
    stacked = P.project(np.vstack([v, v, other]), "umap")
    np.testing.assert_array_equal(df[["x", "y"]].to_numpy(), stacked)  # one fit, cached
    P.clear_cache()
    again = P.project(np.vstack([v, v, other]), "umap")
    np.testing.assert_allclose(again, stacked)  # seeded: reproducible


@pytest.mark.slow
def test_warm_up_in_background():
    thread = P.warm_up_in_background()
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert P.is_warm()
    assert P.cache_info()["entries"] == 0  # the warm-up does not take a cache slot
    assert P.warm_up() < 1.0  # already warm: returns at once


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3, 4, 5, 10, 16])
def test_umap_small_n(n):
    out = P.project(clustered(n), "umap", n_neighbors=15)
    assert out.shape == (n, 2)
    assert np.isfinite(out).all()


@pytest.mark.slow
def test_umap_large_n_path_uses_umaps_own_neighbours(monkeypatch):
    monkeypatch.setattr(P, "EXACT_KNN_MAX", 20)
    out = P.project(clustered(60), "umap")
    assert out.shape == (60, 2) and np.isfinite(out).all()


@pytest.mark.slow
def test_umap_all_rows_identical():
    out = P.project(np.ones((6, 4)), "umap")
    assert out.shape == (6, 2)
    assert (out == out[0]).all()
    out = P.project(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), "umap")
    assert (out[0] == out[2]).all() and (out[0] != out[1]).any()


def test_pca_one_dimension():
    out = P.project(np.array([[1.0], [-2.0], [3.0]]), "pca")
    assert out.shape == (3, 2) and (out[:, 1] == 0).all()


# ----------------------------------------------------------------------------- aligned scatter


def test_aligned_scatter_traces_and_lines():
    df = frame()
    fig = F.aligned_scatter(df)
    # per model: 1 line trace + 2 language traces
    assert len(fig.data) == 6
    kinds = [(t.mode, t.name) for t in fig.data]
    assert (
        kinds
        == [
            ("lines", "translation \u2192 en"),
            ("markers", "en"),
            ("markers", "de"),
        ]
        * 2
    )
    assert [t.xaxis for t in fig.data] == ["x"] * 3 + ["x2"] * 3
    assert fig.layout.xaxis2.matches == "x" and fig.layout.yaxis2.matches == "y"
    assert [a.text for a in fig.layout.annotations] == ["teacher", "student"]

    lines = fig.data[0]
    xs, ys = np.asarray(lines.x, dtype=float), np.asarray(lines.y, dtype=float)
    # de pair 0 at (0.5, 1) -> en pair 0 at (0, 0); de pair 1 at (1.5, 1) -> en pair 1 at (1, 0)
    np.testing.assert_array_equal(xs[[0, 1, 3, 4]], [0.5, 0.0, 1.5, 1.0])
    np.testing.assert_array_equal(ys[[0, 1, 3, 4]], [1.0, 0.0, 1.0, 0.0])
    assert np.isnan(xs[[2, 5]]).all() and len(xs) == 6
    np.testing.assert_array_equal(np.asarray(fig.data[3].x, dtype=float)[[0, 1]], [10.5, 10.0])

    de_student = fig.data[5]
    np.testing.assert_array_equal(de_student.x, [10.5, 11.5])
    np.testing.assert_array_equal(de_student.y, [1.0, 1.0])
    assert list(de_student.text) == ["de 0", "de 1"]
    assert list(de_student.customdata) == [0, 1]
    assert "lang</i> de" in de_student.hovertemplate
    assert "model</i> student" in de_student.hovertemplate
    assert fig.data[1].marker.color == F.ANCHOR_COLOR and fig.data[1].marker.symbol == "diamond"
    assert fig.data[2].marker.color == fig.data[5].marker.color  # one colour per language
    assert [t.showlegend for t in fig.data] == [True] * 3 + [False] * 3


def test_aligned_scatter_without_lines_and_missing_language():
    df = frame(models=("a", "b", "c"), langs=("de", "en", "fr"))
    df = df[~((df.model == "b") & (df.lang == "fr"))]
    fig = F.aligned_scatter(df, line_to=None)
    assert len(fig.data) == 3 * 3
    assert [t.name for t in fig.data[:3]] == ["de", "en", "fr"]  # no anchor: frame order
    assert len(fig.data[5].x) == 0  # model b has no fr rows: empty trace, count unchanged
    fig = F.aligned_scatter(df)
    assert len(fig.data) == 3 * 4
    assert [t.name for t in fig.data[1:4]] == ["en", "de", "fr"]  # anchor first


def test_aligned_scatter_escapes_html_and_wraps_long_sentences():
    df = frame()
    df.loc[0, "sentence"] = "<b>bold</b> & co"
    df.loc[1, "sentence"] = "word " * 40
    fig = F.aligned_scatter(df)
    texts = list(fig.data[1].text)
    assert texts[0] == "&lt;b&gt;bold&lt;/b&gt; &amp; co"
    assert "<br>" in texts[1]


def test_aligned_scatter_translation_without_anchor_gets_no_line():
    df = frame()
    df = df[~((df.lang == "en") & (df.pair_id == 1))]
    fig = F.aligned_scatter(df)
    assert len(fig.data[0].x) == 3  # one segment left in the first facet


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.drop(columns="pair_id"), "lacks column"),
        (lambda d: d.iloc[:0], "no rows"),
        (lambda d: d.assign(x=np.nan), "non-finite"),
        (lambda d: d.assign(y="a"), "numeric"),
    ],
)
def test_aligned_scatter_bad_input(mutate, match):
    with pytest.raises(ValueError, match=match):
        F.aligned_scatter(mutate(frame()))
    with pytest.raises(ValueError, match="DataFrame"):
        F.aligned_scatter([1, 2, 3])


# ----------------------------------------------------------------------------- other figures


def test_similarity_heatmaps():
    labels = ["a short one", "a much longer sentence that will be cut on the axis", "c"]
    t = np.array([[1.0, 0.2, -0.5], [0.2, 1.0, 0.1], [-0.5, 0.1, 1.0]])
    s = np.eye(3)
    fig = F.similarity_heatmaps({"teacher": t, "student": s}, labels)
    assert len(fig.data) == 2
    assert all(isinstance(tr, go.Heatmap) for tr in fig.data)
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), t)
    np.testing.assert_array_equal(np.asarray(fig.data[1].z), s)
    assert {tr.coloraxis for tr in fig.data} == {"coloraxis"}
    assert fig.layout.coloraxis.cmin == -0.5 and fig.layout.coloraxis.cmax == 1.0
    assert (
        fig.layout.xaxis.ticktext[1].endswith("\u2026") and len(fig.layout.xaxis.ticktext[1]) == 28
    )
    assert fig.data[0].customdata[1][0][0] == labels[1]  # full label on hover
    assert fig.data[0].texttemplate == "%{z:.2f}"
    fig = F.similarity_heatmaps({"m": np.eye(3) * 0.5 + 0.1}, labels)
    assert fig.layout.coloraxis.cmin == -0.2


def test_similarity_heatmaps_wrap_past_two_a_row():
    """Four models: a 2 x 2 grid, twice as tall as one row; sentence labels on the left column
    and the bottom row only; three: the third alone on a second row, labelled below."""
    labels = ["one", "two", "three"]
    four = {name: np.eye(3) for name in ("teacher", "untrained", "pre-built", "distilled")}
    one_row = F.similarity_heatmaps(dict(list(four.items())[:2]), labels)
    fig = F.similarity_heatmaps(four, labels)
    assert len(fig.data) == 4 and fig.layout.height == 2 * one_row.layout.height
    domains = {tuple(fig.layout[f"yaxis{k}"].domain) for k in ("", 2, 3, 4)}
    assert len(domains) == 2  # two rows
    assert fig.layout.xaxis.domain == fig.layout.xaxis3.domain  # the same column
    shown_x = [fig.layout[f"xaxis{k}"].showticklabels is not False for k in ("", 2, 3, 4)]
    shown_y = [fig.layout[f"yaxis{k}"].showticklabels is not False for k in ("", 2, 3, 4)]
    assert shown_x == [False, False, True, True] and shown_y == [True, False, True, False]
    three = F.similarity_heatmaps(dict(list(four.items())[:3]), labels)
    shown_x = [three.layout[f"xaxis{k}"].showticklabels is not False for k in ("", 2, 3)]
    assert shown_x == [False, True, True]  # the second panel has none below it
    wide = F.similarity_heatmaps(four, labels, per_row=4)
    assert len({tuple(wide.layout[f"yaxis{k}"].domain) for k in ("", 2, 3, 4)}) == 1
    with pytest.raises(ValueError, match="per_row"):
        F.similarity_heatmaps(four, labels, per_row=0)


def test_similarity_heatmaps_bad_input():
    with pytest.raises(ValueError, match="empty"):
        F.similarity_heatmaps({}, ["a"])
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        F.similarity_heatmaps({"m": np.eye(3)}, ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        F.similarity_heatmaps({"m": np.full((2, 2), np.nan)}, ["a", "b"])


def test_training_curves():
    history = pd.DataFrame({"step": [1, 2, 3, 4], "loss": [1.0, np.nan, 0.5, 0.25]})
    acc = pd.DataFrame(
        {
            "step": [0, 4, 0, 4, 2],
            "lang": ["de", "de", "fr", "fr", "de"],
            "accuracy": [0.2, 0.9, 0.3, 0.8, 0.5],
        }
    )
    refs = {"teacher": 0.95, "untrained student": 0.25}
    fig = F.training_curves(history, acc, refs)
    assert len(fig.data) == 1 + 2 + 2
    loss = fig.data[0]
    np.testing.assert_array_equal(loss.x, [1, 3, 4])
    np.testing.assert_array_equal(loss.y, [1.0, 0.5, 0.25])
    assert loss.xaxis == "x"
    de = fig.data[1]
    assert de.name == "de" and de.xaxis == "x2"
    np.testing.assert_array_equal(de.x, [0, 2, 4])  # sorted by step
    np.testing.assert_array_equal(de.y, [0.2, 0.5, 0.9])
    teacher = fig.data[3]
    assert teacher.name == "teacher (0.95)"
    assert list(teacher.y) == [0.95, 0.95] and list(teacher.x) == [0.0, 4.0]
    assert fig.data[3].line.dash != fig.data[4].line.dash


def test_training_curves_empty_history_and_only_references():
    fig = F.training_curves(pd.DataFrame({"step": [], "loss": []}), None, {"teacher": 0.9})
    assert len(fig.data) == 2
    assert len(fig.data[0].x) == 0


def test_training_curves_bad_input():
    h = pd.DataFrame({"step": [1], "loss": [0.5]})
    with pytest.raises(ValueError, match="lacks column"):
        F.training_curves(pd.DataFrame({"step": [1]}))
    with pytest.raises(ValueError, match="0..1"):
        F.training_curves(h, pd.DataFrame({"step": [1], "lang": ["de"], "accuracy": [85.0]}))
    with pytest.raises(ValueError, match="not finite"):
        F.training_curves(h, None, {"teacher": math.nan})


def test_accuracy_bars():
    df = pd.DataFrame(
        {
            "lang": ["de", "fr", "de", "fr", "ja"],
            "stage": ["before", "before", "after", "after", "after"],
            "accuracy": [0.3, 0.4, 0.9, 0.95, 0.7],
        }
    )
    fig = F.accuracy_bars(df, group="stage")
    assert [t.name for t in fig.data] == ["before", "after"]
    assert all(isinstance(t, go.Bar) for t in fig.data)
    assert list(fig.data[0].x) == ["de", "fr", "ja"] == list(fig.data[1].x)
    assert list(fig.data[0].y) == [0.3, 0.4, None]
    assert list(fig.data[1].y) == [0.9, 0.95, 0.7]
    assert fig.layout.barmode == "group"
    with pytest.raises(ValueError, match="more than one row"):
        F.accuracy_bars(pd.concat([df, df]), group="stage")
    with pytest.raises(ValueError, match="lacks column"):
        F.accuracy_bars(df)  # no "model" column
    with pytest.raises(ValueError, match="0..1"):
        F.accuracy_bars(df.assign(accuracy=df.accuracy * 100), group="stage")


def test_empty_figure():
    fig = F.empty_figure("pick at least two sentences <here>")
    assert len(fig.data) == 0
    assert len(fig.layout.annotations) == 1
    assert fig.layout.annotations[0].text == "pick at least two sentences &lt;here&gt;"
    assert fig.layout.xaxis.visible is False


def test_bad_input_becomes_an_annotated_empty_figure():
    try:
        P.project(np.ones((1, 3)), "pca")
    except ValueError as err:
        fig = F.empty_figure(str(err))
    assert "at least 2" in fig.layout.annotations[0].text


# ----------------------------------------------------------------------------- metrics


def test_translation_cosine_hand_checked():
    v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 2.0]])
    langs = ["en", "de", "en", "de", "fr"]
    pids = [0, 0, 1, 1, 1]
    got = M.translation_cosine(
        {"a": v, "same": np.vstack([v[0], v[0], v[2], v[2], v[2]])}, langs, pids
    )
    assert got["a"] == pytest.approx((1.0 + math.sqrt(0.5) + 1.0) / 3)
    assert got["same"] == pytest.approx(1.0)
    by_lang = M.translation_cosine_by_lang({"a": v}, langs, pids)
    assert by_lang["lang"].tolist() == ["de", "fr"]
    assert by_lang["n_pairs"].tolist() == [2, 1]
    assert by_lang["cosine"].tolist() == pytest.approx([(1 + math.sqrt(0.5)) / 2, 1.0])


def test_translation_cosine_bad_input():
    v = np.eye(3)
    with pytest.raises(ValueError, match="no translation"):
        M.translation_cosine({"a": v}, ["de", "fr", "es"], [0, 1, 2])
    with pytest.raises(ValueError, match="one vector per sentence"):
        M.translation_cosine({"a": v[:2]}, ["en", "de", "fr"], [0, 0, 0])
    with pytest.raises(ValueError, match="pair_ids"):
        M.translation_cosine({"a": v}, ["en", "de", "fr"], [0, 0])
    with pytest.raises(ValueError, match="NaN"):
        M.translation_cosine({"a": np.full((3, 3), np.nan)}, ["en", "de", "fr"], [0, 0, 0])


def test_cosine_matrix():
    m = M.cosine_matrix(np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]]))
    np.testing.assert_allclose(np.diag(m), 1.0)
    assert m[0, 1] == pytest.approx(0.0) and m[0, 2] == pytest.approx(math.sqrt(0.5))


def test_trustworthiness():
    from sklearn.manifold import trustworthiness

    x = clustered(120, d=6)
    assert M.projection_trustworthiness(x[:, :2], x[:, :2], metric="euclidean") == 1.0
    low = P.project(x, "pca")
    got = M.projection_trustworthiness(x, low)
    assert got == pytest.approx(trustworthiness(x, low, n_neighbors=5, metric="cosine"))
    big = clustered(600, d=6)
    sub = M.projection_trustworthiness(big, big[:, :2], max_points=200)
    assert 0.0 <= sub <= 1.0
    assert M.projection_trustworthiness(x[:5], low[:5], n_neighbors=5) <= 1.0  # k lowered
    with pytest.raises(ValueError, match="same rows"):
        M.projection_trustworthiness(x, low[:-1])
    with pytest.raises(ValueError, match="at least 4"):
        M.projection_trustworthiness(x[:3], low[:3])


# ----------------------------------------------------------------------------- writing files


def test_write_figures_html_inline(tmp_path):
    figs = {
        "empty": F.empty_figure("nothing"),
        "bars.v1": F.accuracy_bars(
            pd.DataFrame({"lang": ["de"], "model": ["m"], "accuracy": [0.5]})
        ),
    }
    paths = plot_cli.write_figures(figs, tmp_path / "out", png=False)
    assert [p.name for p in paths] == ["empty.html", "bars.v1.html"]
    text = paths[0].read_text(encoding="utf-8")
    assert "nothing" in text
    assert 'src="https://cdn' not in text  # plotly.js is inline, not fetched
    assert len(text) > 1_000_000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bars.v1.html", "empty.html"]


def test_write_figures_bad_input(tmp_path, monkeypatch):
    fig = F.empty_figure("x")
    with pytest.raises(ValueError, match="empty"):
        plot_cli.write_figures({}, tmp_path)
    with pytest.raises(ValueError, match="safe file stem"):
        plot_cli.write_figures({"../evil": fig}, tmp_path)
    with pytest.raises(ValueError, match="not a go.Figure"):
        plot_cli.write_figures({"a": {"data": []}}, tmp_path)
    monkeypatch.setattr(plot_cli, "png_support", lambda: (False, "no browser here"))
    with pytest.raises(ValueError, match="no browser here"):
        plot_cli.write_figures({"a": fig}, tmp_path, png=True)
    assert [p.name for p in plot_cli.write_figures({"a": fig}, tmp_path)] == ["a.html"]


@pytest.mark.slow
def test_write_figures_png_where_kaleido_works(tmp_path):
    ok, why = plot_cli.png_support()
    if not ok:
        pytest.skip(why)
    paths = plot_cli.write_figures({"e": F.empty_figure("png")}, tmp_path, png=True, width=300)
    png = [p for p in paths if p.suffix == ".png"]
    assert len(png) == 1 and png[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- teacher's space


def teacher_space_set(m: int = 4, langs=("de", "fr"), d: int = 32, seed: int = 0):
    """m English anchors; one translation per (language, anchor); three student frames.

    "untrained": random vectors; "step 1": halfway; "distilled": each translation's student
    vector is its anchor's teacher vector, scaled (cosine ignores the length).
    """
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(m, d))
    pids = list(range(m)) * len(langs)
    row_langs = [lang for lang in langs for _ in range(m)]
    sents = [f"{lang} sentence {i}" for lang, i in zip(row_langs, pids, strict=True)]
    untrained = rng.normal(size=(len(pids), d))
    distilled = teacher[pids] * rng.uniform(0.5, 2.0, size=(len(pids), 1))
    frames = {
        "untrained": untrained,
        "step 1": 0.5 * (untrained + distilled),
        "distilled": distilled,
    }
    return teacher, frames, row_langs, sents, pids


def test_teacher_space_frames_rows_columns_and_fixed_anchors():
    t, frames, langs, sents, pids = teacher_space_set()
    en = [f"English {i}" for i in range(len(t))]
    df = P.teacher_space_frames(t, frames, langs, sents, pids, "pca", en_sentences=en)
    columns = ["x", "y", "lang", "model", "sentence", "pair_id", "frame", "distance"]
    assert list(df.columns) == columns == P.TEACHER_SPACE_COLUMNS
    m, n = len(t), len(langs)
    assert len(df) == 3 * (m + n)
    assert df["frame"].tolist() == [f for f in frames for _ in range(m + n)]
    for label in frames:
        part = df[df.frame == label]
        assert part["model"].tolist() == ["teacher"] * m + ["student"] * n
        assert part["lang"].tolist() == ["en"] * m + langs
        assert part["sentence"].tolist() == en + sents
        assert part["pair_id"].tolist() == list(range(m)) + pids
        assert part["distance"].iloc[:m].isna().all()
        assert part["distance"].iloc[m:].notna().all()
    anchors = [df[(df.frame == f) & (df.model == "teacher")][["x", "y"]].to_numpy() for f in frames]
    for other in anchors[1:]:
        np.testing.assert_array_equal(other, anchors[0])  # the anchors never move
    # ONE fit of the anchors (once) and every frame's students, stacked: the same cache entry.
    xy = P.project(np.vstack([t, *frames.values()]), "pca")
    np.testing.assert_array_equal(anchors[0], xy[:m])
    students = df[df.model == "student"][["x", "y"]].to_numpy()
    np.testing.assert_array_equal(students, xy[m:])
    assert P.cache_info()["entries"] == 1
    assert df["pair_id"].dtype == np.int64 and df["x"].dtype == np.float64


def test_teacher_space_distilled_frame_lands_on_the_anchors():
    t, frames, langs, sents, pids = teacher_space_set(m=30, d=64)
    df = P.teacher_space_frames(t, frames, langs, sents, pids, "pca")
    distilled = df[(df.frame == "distilled") & (df.model == "student")]
    np.testing.assert_allclose(distilled["distance"], 0.0, atol=1e-12)
    anchor_xy = df[(df.frame == "distilled") & (df.model == "teacher")][["x", "y"]].to_numpy()
    np.testing.assert_allclose(distilled[["x", "y"]].to_numpy(), anchor_xy[pids], atol=1e-5)
    untrained = df[(df.frame == "untrained") & (df.model == "student")]
    assert untrained["distance"].mean() == pytest.approx(1.0, abs=0.1)  # random: cos ~ 0

    good = M.teacher_space_numbers(t, frames["distilled"], pids)
    assert good == {
        "mean_cos": pytest.approx(1.0),
        "mean_distance": pytest.approx(0.0, abs=1e-12),
        "retrieval": 1.0,
        "n": len(pids),
        "pool": len(t),
    }
    bad = M.teacher_space_numbers(t, frames["untrained"], pids)
    assert bad["mean_distance"] == pytest.approx(1.0, abs=0.1)
    assert bad["mean_distance"] == pytest.approx(untrained["distance"].mean())
    assert bad["retrieval"] < 0.3  # chance: 1/30


def test_teacher_space_numbers_hand_checked():
    t = np.array([[1.0, 0.0], [0.0, 1.0]])
    same = M.teacher_space_numbers(t, t.copy(), [0, 1])
    assert same == {"mean_cos": 1.0, "mean_distance": 0.0, "retrieval": 1.0, "n": 2, "pool": 2}
    s = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 1.0]])
    got = M.teacher_space_numbers(t, s, np.array([0, 1, 1, 0]))
    assert got["mean_cos"] == pytest.approx((1 + 1 + 0 + math.sqrt(0.5)) / 4)
    assert got["mean_distance"] == pytest.approx(1 - got["mean_cos"])
    assert got["retrieval"] == 3 / 4  # row 2 is nearest anchor 0; row 3's tie goes to anchor 0
    assert got["n"] == 4


def test_teacher_space_numbers_bad_input():
    t = np.eye(3)
    with pytest.raises(ValueError, match="teacher's space, i.e. the same dimension"):
        M.teacher_space_numbers(t, np.ones((2, 4)), [0, 1])
    with pytest.raises(ValueError, match=r"0\.\.2; got 3 at row 1"):
        M.teacher_space_numbers(t, np.ones((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="one anchor row per translation"):
        M.teacher_space_numbers(t, np.ones((2, 3)), [0])
    with pytest.raises(ValueError, match="integers"):
        M.teacher_space_numbers(t, np.ones((2, 3)), [0.5, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        M.teacher_space_numbers(t, np.full((2, 3), np.nan), [0, 1])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda a: {**a, "frames": {**a["frames"], "step 1": np.ones((8, 5))}},
            r"frame 'step 1' have dimension 5 but the teacher's have 32: the student's vectors "
            r"must be in the teacher's space, i\.e\. the same dimension",
        ),
        (
            lambda a: {**a, "pair_ids": [0, 1, 2, 3, 0, 1, 2, 4]},
            r"pair_ids must be rows of teacher_en, 0\.\.3 .*got 4 at row 7",
        ),
        (lambda a: {**a, "pair_ids": [-1] * 8}, "got -1 at row 0"),
        (lambda a: {**a, "pair_ids": ["a"] * 8}, "pair_ids must be integers"),
        (
            lambda a: {**a, "frames": {**a["frames"], "distilled": np.ones((7, 32))}},
            "frame 'distilled' have 7 rows but there are 8 translations",
        ),
        (lambda a: {**a, "sentences": a["sentences"][:-1]}, "one lang, sentence and pair_id"),
        (lambda a: {**a, "frames": {}}, "student_x_by_frame is empty"),
        (lambda a: {**a, "frames": {1: np.ones((8, 32)), "1": np.ones((8, 32))}}, "distinct"),
        (lambda a: {**a, "en_sentences": ["only one"]}, "one English sentence per anchor"),
        (lambda a: {**a, "teacher": np.ones(32)}, "teacher_en must be a 2-D array"),
        (
            lambda a: {**a, "frames": {"untrained": np.full((8, 32), np.nan)}},
            "frame 'untrained' has NaN",
        ),
        (lambda a: {**a, "method": "tsne"}, "unknown projection method"),
    ],
)
def test_teacher_space_frames_bad_input(change, match):
    t, frames, langs, sents, pids = teacher_space_set()
    args = {
        "teacher": t,
        "frames": frames,
        "langs": langs,
        "sentences": sents,
        "pair_ids": pids,
        "method": "pca",
        "en_sentences": None,
    }
    a = change(args)
    with pytest.raises(ValueError, match=match):
        P.teacher_space_frames(
            a["teacher"],
            a["frames"],
            a["langs"],
            a["sentences"],
            a["pair_ids"],
            a["method"],
            en_sentences=a["en_sentences"],
        )


@pytest.fixture
def teacher_space_df() -> pd.DataFrame:
    t, frames, langs, sents, pids = teacher_space_set()
    en = [f"English {i}" for i in range(len(t))]
    return P.teacher_space_frames(t, frames, langs, sents, pids, "pca", en_sentences=en)


NUMBERS = {
    "untrained": {"mean_cos": 0.02, "mean_distance": 0.98, "retrieval": 0.0, "n": 200},
    "distilled": {"mean_cos": 0.71, "mean_distance": 0.29, "retrieval": 0.86, "n": 200},
}


def test_teacher_space_figure_draws_translations_against_anchors(teacher_space_df):
    df = teacher_space_df
    fig = F.teacher_space(df, caption_numbers=NUMBERS, title="the teacher's space")
    assert len(fig.data) == 1 + 2 * 2  # anchors, 2 line traces, 2 marker traces
    assert [t.mode for t in fig.data] == ["markers", "lines", "lines", "markers", "markers"]
    assert [t.name for t in fig.data[3:]] == ["student(de)", "student(fr)"]
    anchors = fig.data[0]
    assert anchors.name == "teacher(en)"
    assert anchors.marker.symbol == "diamond" and anchors.marker.color == F.ANCHOR_COLOR
    assert list(anchors.text) == [f"English {i}" for i in range(4)]

    last = df[df.frame == "distilled"]  # default: the last frame
    a_xy = last[last.model == "teacher"][["x", "y"]].to_numpy()
    de = last[(last.model == "student") & (last.lang == "de")]
    np.testing.assert_allclose(anchors.x, a_xy[:, 0], rtol=1e-6)
    np.testing.assert_allclose(fig.data[3].x, de["x"], rtol=1e-6)
    np.testing.assert_allclose(fig.data[3].customdata, de["distance"], atol=1e-6)
    assert fig.data[3].text[0] == "de sentence 0<br><i>teacher(en):</i> English 0"
    # Each de point is joined to its own anchor: [student, anchor, gap] per translation.
    seg = np.asarray(fig.data[1].x, dtype=float).reshape(-1, 3)
    np.testing.assert_allclose(seg[:, 0], de["x"], rtol=1e-6)
    np.testing.assert_allclose(seg[:, 1], a_xy[de["pair_id"], 0], rtol=1e-6)
    assert np.isnan(seg[:, 2]).all()
    colors = F.language_colors(["en", "de", "fr"])
    assert fig.data[1].line.color == fig.data[3].marker.color == colors["de"]

    caption = next(a for a in fig.layout.annotations if a.name == "caption")
    assert caption.text == (
        "cos(student(x), teacher(en)) 0.02 \u2192 0.71 \u00b7 retrieval into the teacher's "
        "space 0.00 \u2192 0.86 (untrained \u2192 distilled, n = 200 translations)"
    )
    assert not F.teacher_space(df).layout.annotations  # no numbers passed: no caption


def test_teacher_space_frames_share_axes(teacher_space_df):
    df = teacher_space_df
    first = F.teacher_space(df, "untrained")
    last = F.teacher_space(df, "distilled")
    assert first.layout.xaxis.range == last.layout.xaxis.range
    assert first.layout.yaxis.range == last.layout.yaxis.range
    lo, hi = first.layout.xaxis.range
    assert lo < df["x"].min() and df["x"].max() < hi  # covers every frame's points
    lo, hi = first.layout.yaxis.range
    assert lo < df["y"].min() and df["y"].max() < hi
    assert not np.allclose(first.data[3].x, last.data[3].x)  # the students moved
    np.testing.assert_array_equal(first.data[0].x, last.data[0].x)  # the anchors did not


def test_teacher_space_animation_frames_slider_and_buttons(teacher_space_df):
    df = teacher_space_df
    fig = F.teacher_space_animation(df, caption_numbers=NUMBERS)
    labels = ["untrained", "step 1", "distilled"]
    assert [f.name for f in fig.frames] == labels
    assert all(len(f.data) == len(fig.data) == 5 for f in fig.frames)
    for f in fig.frames:  # same traces in the same order as the figure's data
        assert [t.type for t in f.data] == [t.type for t in fig.data]
    (slider,) = fig.layout.sliders
    assert [s.label for s in slider.steps] == labels
    assert [list(s.args[0]) for s in slider.steps] == [[label] for label in labels]
    assert all(s.method == "animate" for s in slider.steps)
    (menu,) = fig.layout.updatemenus
    assert menu.buttons[0].args[0] is None  # play: all frames, from the current one
    assert list(menu.buttons[1].args[0]) == [None]  # pause
    assert "play" in menu.buttons[0].label and "pause" in menu.buttons[1].label

    static = {label: F.teacher_space(df, label) for label in labels}
    assert fig.layout.xaxis.range == static["distilled"].layout.xaxis.range  # fixed axes
    assert fig.layout.yaxis.range == static["distilled"].layout.yaxis.range
    for f in fig.frames:
        np.testing.assert_array_equal(f.data[0].x, fig.frames[0].data[0].x)  # anchors fixed
        for k in range(5):
            np.testing.assert_array_equal(f.data[k].x, static[f.name].data[k].x)
            np.testing.assert_array_equal(f.data[k].y, static[f.name].data[k].y)
        np.testing.assert_array_equal(f.data[3].customdata, static[f.name].data[3].customdata)
    np.testing.assert_array_equal(fig.data[3].x, static["untrained"].data[3].x)  # starts first
    assert any(a.name == "caption" for a in fig.layout.annotations)


def test_teacher_space_animation_stays_light():
    # A few hundred translations x 10 frames: the frames carry only what moves, as float32.
    t, _, langs, sents, pids = teacher_space_set(m=100, langs=("de", "fr", "ja"), d=16)
    rng = np.random.default_rng(1)
    frames = {f"step {k}": rng.normal(size=(len(pids), 16)) for k in range(10)}
    df = P.teacher_space_frames(t, frames, langs, sents, pids, "pca")
    fig = F.teacher_space_animation(df)
    assert len(fig.frames) == 10
    assert len(fig.to_json()) < 600_000  # about 27 KB a frame; plotly.js itself not included


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.drop(columns="frame"), "lacks column"),
        (lambda d: d.iloc[:0], "no rows"),
        (lambda d: d.assign(model="other"), "'teacher' .* or 'student'"),
        (lambda d: d[d.model == "teacher"], "no 'student' rows"),
        (lambda d: d.assign(x=np.inf), "non-finite"),
    ],
)
def test_teacher_space_bad_input(teacher_space_df, mutate, match):
    for draw in (F.teacher_space, F.teacher_space_animation):
        with pytest.raises(ValueError, match=match):
            draw(mutate(teacher_space_df))


def test_teacher_space_bad_frame_and_numbers(teacher_space_df):
    df = teacher_space_df
    with pytest.raises(ValueError, match="frame 'step 9' is not in df"):
        F.teacher_space(df, "step 9")
    with pytest.raises(ValueError, match="needs 'mean_cos' and 'retrieval'"):
        F.teacher_space(df, caption_numbers={"untrained": {"mean_cos": 0.1}})
    with pytest.raises(ValueError, match="finite number"):
        F.teacher_space(df, caption_numbers={"untrained": {"mean_cos": "x", "retrieval": 0}})
    with pytest.raises(ValueError, match="non-empty mapping"):
        F.teacher_space_animation(df, caption_numbers={})
    with pytest.raises(ValueError, match="frame_ms"):
        F.teacher_space_animation(df, frame_ms=0)
    one = F.teacher_space(df, caption_numbers={"distilled": NUMBERS["distilled"]})
    assert one.layout.annotations[0].text == (
        "cos(student(x), teacher(en)) 0.71 \u00b7 retrieval into the teacher's space 0.86 "
        "(distilled, n = 200 translations)"
    )


@pytest.mark.slow
def test_teacher_space_frames_umap_one_fit_anchors_fixed():
    t, frames, langs, sents, pids = teacher_space_set(m=20, d=16)
    frames["distilled"] = t[pids].copy()  # identical rows: UMAP gives identical coordinates
    df = P.teacher_space_frames(t, frames, langs, sents, pids, "umap")
    assert df[["x", "y"]].notna().all().all()
    anchors = df[(df.frame == "distilled") & (df.model == "teacher")][["x", "y"]].to_numpy()
    first = df[(df.frame == "untrained") & (df.model == "teacher")][["x", "y"]].to_numpy()
    np.testing.assert_array_equal(anchors, first)
    students = df[(df.frame == "distilled") & (df.model == "student")][["x", "y"]].to_numpy()
    np.testing.assert_array_equal(students, anchors[pids])


def test_teacher_space_slider_without_frames_replays_each_frame():
    """For hosts that drop frames (gradio's gr.Plot): no frames, no play button; each slider
    step restyles every trace to exactly what the static figure of that frame draws."""
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(4, 8))
    frames = {"untrained": rng.normal(size=(8, 8)), "distilled": np.repeat(teacher, 2, axis=0)}
    langs = ["de", "fr"] * 4
    df = P.teacher_space_frames(
        teacher, frames, langs, [f"x{i}" for i in range(8)], np.repeat(np.arange(4), 2), "pca"
    )
    fig = F.teacher_space_animation(df, frames=False)
    assert len(fig.frames) == 0 and not fig.layout.updatemenus
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["untrained", "distilled"]
    for step in steps:
        assert step.method == "update" and list(step.args[2]) == list(range(len(fig.data)))
        still = F.teacher_space(df, step.label)
        for got, want in zip(step.args[0]["x"], still.data, strict=True):
            np.testing.assert_allclose(np.asarray(got, float), np.asarray(want.x, float))
    json.loads(fig.to_json())  # valid JSON (no NaN literals) for the page


def test_the_slider_caption_follows_the_frame_with_its_pool():
    """Each step of the slider rewrites the caption to baseline -> that frame's numbers, and
    the caption says among how many English sentences the retrieval ranks."""
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(4, 8))
    vectors = {
        "untrained": rng.normal(size=(8, 8)),
        "pre-built": np.repeat(teacher, 2, axis=0) + 0.3 * rng.normal(size=(8, 8)),
        "distilled": np.repeat(teacher, 2, axis=0),
    }
    ids = np.repeat(np.arange(4), 2)
    numbers = {k: M.teacher_space_numbers(teacher, v, ids) for k, v in vectors.items()}
    df = P.teacher_space_frames(
        teacher, vectors, ["de", "fr"] * 4, [f"x{i}" for i in ids], ids, "pca"
    )
    fig = F.teacher_space_animation(df, frames=False, caption_numbers=numbers)
    names = [a.name for a in fig.layout.annotations]
    at = names.index("caption")
    shown = fig.layout.annotations[at].text
    assert "among 4 English sentences" in shown and "\u2192" not in shown  # the first frame
    for step in fig.layout.sliders[0].steps:
        text = step.args[1][f"annotations[{at}].text"]
        want = numbers[step.label]
        assert f"{want['mean_cos']:.2f}" in text and f"{want['retrieval']:.2f}" in text
        assert "among 4 English sentences" in text and "n = 8 translations" in text
        assert step.label in text
    captions = {s.label: s.args[1][f"annotations[{at}].text"] for s in fig.layout.sliders[0].steps}
    assert captions["pre-built"] != captions["distilled"]


def test_training_curves_smoothed_loss_is_the_trailing_mean():
    history = pd.DataFrame({"step": [1, 2, 3, 4, 5], "loss": [1.0, 3.0, np.nan, 2.0, 4.0]})
    fig = F.training_curves(history, None, None, smooth=2)
    assert [t.name for t in fig.data] == ["loss", "loss, smoothed (2 steps)"]
    np.testing.assert_allclose(fig.data[1].y, [1.0, 2.0, 2.5, 3.0])  # NaN rows skipped
    assert fig.data[0].opacity < 1
    assert len(F.training_curves(history).data) == 1  # off by default


def test_heatmap_values_stay_written_up_to_twenty_sentences():
    rng = np.random.default_rng(0)
    for n, written, size in ((12, True, 12), (14, True, 9), (20, True, 9), (21, False, 9)):
        m = np.corrcoef(rng.normal(size=(n, 5)))
        fig = F.similarity_heatmaps({"teacher": m, "student": m}, [f"s{i}" for i in range(n)])
        assert (fig.data[0].texttemplate is not None) is written, n
        assert fig.data[0].textfont.size == size
