"""Project sentence vectors of several models into ONE shared 2-D space.

Teacher and student vectors are stacked and projected by a single fit, so a student point that
lands on a teacher point really means "the student's vector is close to the teacher's", not an
accident of two independent maps. Rows are L2-normalised first: cosine is the geometry sentence
embeddings are trained and compared in, so PCA and UMAP both see the same angles the metrics in
``viz.metrics`` measure.

Methods:

- ``"pca"``: instant (well under a second for 6,000 x 384), linear, deterministic.
- ``"umap"``: cosine metric, fixed seed. Exact k-nearest neighbours are computed here with one
  matrix product (UMAP's own small-data path calls a numba metric once per pair from Python and
  is 2-3x slower) and handed to UMAP as ``precomputed_knn``. The first call in a process pays
  numba's JIT compile (20-40 s cold on 2 cores): call :func:`warm_up` from a background thread
  at start-up and show :func:`is_warm` in the UI.
  It runs 200 epochs (UMAP's own default above 10,000 points; below, UMAP would run 500):
  measured on clustered 384-d data, 200 epochs give the same trustworthiness as 500 (0.9965)
  in 2.2x less time.

:func:`teacher_space_frames` draws the method itself: the teacher's English anchors and the
student's translations in several frames (untrained, training steps, distilled), all in one fit
so that the anchors stay put and only the students move.

Not offered: umap's ``AlignedUMAP``. Measured on 2 cores it took 16.5 s for 2 models x 1,200
sentences and 23.7 s for 3 x 1,200 (a shared UMAP fit of the same rows: 2.9 s and 6.4 s before
the k-NN and epoch changes above, about 1-2.5 s after), plus its own extra JIT compile; and it
gives each model its own map pulled into register rather than one shared fit, which is what the
before/after picture needs.

Results are cached (LRU of a few entries, keyed by a hash of the vector bytes, the method and
its parameters), so redrawing the same data is a dictionary look-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "FRAME_COLUMNS",
    "METHODS",
    "TEACHER_SPACE_COLUMNS",
    "cache_info",
    "clear_cache",
    "is_warm",
    "project",
    "project_frame",
    "teacher_space_frames",
    "teacher_space_journey",
    "warm_up",
    "warm_up_in_background",
]

METHODS = ("umap", "pca")
UMAP_EPOCHS = 200
EXACT_KNN_MAX = 20_000  # above this many distinct rows, UMAP's own approximate k-NN is used
FRAME_COLUMNS = ["x", "y", "lang", "model", "sentence", "pair_id"]
TEACHER_SPACE_COLUMNS = [*FRAME_COLUMNS, "frame", "distance"]
CACHE_SIZE = 8

_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()
_warm = threading.Event()
_warm_lock = threading.Lock()


# ----------------------------------------------------------------------------- validation


def _as_matrix(vectors: object, name: str = "vectors", *, min_rows: int = 2) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 (n, d) array of unit rows, or raise."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric (n, d) array: {err}") from None
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n sentences, d dimensions), got shape {arr.shape}; "
            "stack the sentence vectors with np.vstack"
        )
    n, d = arr.shape
    if n < min_rows:
        if min_rows == 2:
            raise ValueError(f"{name} has {n} point(s); a projection needs at least 2 sentences")
        raise ValueError(f"{name} has {n} row(s); pass at least {min_rows}")
    if d < 1:
        raise ValueError(f"{name} has 0 dimensions; pass the sentence embeddings, shape (n, d)")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{name} has NaN or inf in {rows.size} row(s) (first: row {int(rows[0])}); "
            "re-encode those sentences or drop them"
        )
    norms = np.linalg.norm(arr, axis=1)
    zero = norms == 0
    if zero.any():
        rows = np.flatnonzero(zero)
        raise ValueError(
            f"{name} has {rows.size} all-zero row(s) (first: row {int(rows[0])}); cosine is "
            "undefined for a zero vector: check the encoder output for those sentences"
        )
    return np.ascontiguousarray(arr / norms[:, None], dtype=np.float32)


def _check_method(method: str) -> str:
    if method == "aligned_umap":
        raise ValueError(
            "method 'aligned_umap' is not offered: on 2 CPU cores AlignedUMAP took 16-24 s for "
            "2-3 models x 1,200 sentences (5-8x a shared UMAP fit) and gives each model its own "
            "map instead of one shared fit; use 'umap' or 'pca'"
        )
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; use one of {', '.join(METHODS)}")
    return method


def _check_params(n_neighbors: int, min_dist: float, n_epochs: int) -> None:
    if not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 2:
        raise ValueError(f"n_neighbors must be an integer >= 2, got {n_neighbors!r}")
    if not isinstance(min_dist, (int, float, np.number)) or not 0.0 <= float(min_dist) <= 1.0:
        raise ValueError(f"min_dist must be a number between 0 and 1, got {min_dist!r}")
    if not isinstance(n_epochs, (int, np.integer)) or n_epochs < 1:
        raise ValueError(f"n_epochs must be an integer >= 1, got {n_epochs!r}")


def _key(arrays: Sequence[np.ndarray], *params: object) -> tuple:
    h = hashlib.blake2b(digest_size=16)
    for arr in arrays:
        h.update(str((arr.shape, arr.dtype.str)).encode())
        h.update(memoryview(arr).cast("B"))
    return (h.hexdigest(), *params)


def _cache_get(key: tuple):
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
        return hit


def _cache_put(key: tuple, value):
    with _cache_lock:
        _cache[key] = value
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def _one_blas_thread():
    """A context in which BLAS runs single-threaded (threadpoolctl, a scikit-learn dependency).

    On 2 cores shared with another busy process, OpenBLAS's spinning threads made PCA of
    6,000 x 384 take 2.5 s instead of 0.04 s (measured). The limit is process-wide while the
    projection runs.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False  # cached: a caller must not change what the next redraw gets
    return arr


# ----------------------------------------------------------------------------- the methods


def _pca(unit: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    if unit.shape[1] == 1:  # one dimension: nothing to reduce, put everything on the x axis
        return np.column_stack([unit[:, 0] - unit[:, 0].mean(), np.zeros(len(unit))])
    return PCA(n_components=2, random_state=seed).fit_transform(unit.astype(np.float64))


def _exact_knn(unit: np.ndarray, k: int, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-NN of unit rows, self first: indices (n, k) int64, distances (n, k) f32."""
    n = unit.shape[0]
    if chunk is None:  # rows per block: keep the (chunk, n) similarity block under ~256 MB
        chunk = max(1, min(2048, (1 << 26) // n))
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sims = unit[start:stop] @ unit.T  # (c, n)
        rows = np.arange(stop - start)
        sims[rows, np.arange(start, stop)] = np.inf  # self always first, even among duplicates
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (c, k) unordered
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(part, order, axis=1)
        d = 1.0 - np.take_along_axis(part_sims, order, axis=1)
        d[:, 0] = 0.0
        dist[start:stop] = np.clip(d, 0.0, 2.0)
    return idx, dist


def _umap_kwargs(n: int, seed: int, n_neighbors: int, min_dist: float, n_epochs: int) -> dict:
    return {
        "n_components": 2,
        "n_neighbors": min(int(n_neighbors), n - 1),
        "min_dist": float(min_dist),
        "n_epochs": int(n_epochs),
        "metric": "cosine",
        "random_state": seed,
        "n_jobs": 1,  # a fixed seed makes umap single-threaded anyway; say so to silence it
    }


@contextlib.contextmanager
def _quiet_umap() -> Iterator[None]:
    """Silence umap's notes that are expected here (seeded => 1 thread, no search index)."""
    with warnings.catch_warnings():
        for msg in ("n_jobs value", "precomputed_knn", "not fully connected", "n_neighbors"):
            warnings.filterwarnings("ignore", message=f".*{msg}.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def _small_layout(n: int) -> np.ndarray:
    # UMAP's spectral initialisation needs more points than output dimensions plus one.
    angles = np.linspace(0.0, 2 * np.pi, n, endpoint=False) + np.pi / 2
    return np.column_stack([np.cos(angles), np.sin(angles)])


def _umap(
    unit: np.ndarray, seed: int, n_neighbors: int, min_dist: float, n_epochs: int
) -> np.ndarray:
    n = unit.shape[0]
    # Identical vectors (say, a model compared with itself) must land on one point; UMAP's
    # optimiser would push duplicates apart, so fit the distinct rows and scatter back.
    _, first, inverse = np.unique(unit, axis=0, return_index=True, return_inverse=True)
    if len(first) < n:
        order = np.argsort(first)  # distinct rows in order of first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        distinct = _umap(unit[first[order]], seed, n_neighbors, min_dist, n_epochs)
        return distinct[rank[inverse.ravel()]]
    if n <= 3:  # too few points for a neighbourhood graph: show them evenly, in input order
        return _small_layout(n)
    import umap

    kw = _umap_kwargs(n, seed, n_neighbors, min_dist, n_epochs)
    if n <= EXACT_KNN_MAX:
        kw["precomputed_knn"] = _exact_knn(unit, kw["n_neighbors"])
    # else: exact k-NN is O(n^2 d); let UMAP's approximate NN-descent find the neighbours
    with _quiet_umap():
        out = umap.UMAP(**kw).fit_transform(unit)
    _warm.set()
    return np.asarray(out, dtype=np.float64)


# ----------------------------------------------------------------------------- public API


def project(
    vectors: np.ndarray,
    method: str = "umap",
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int = UMAP_EPOCHS,
) -> np.ndarray:
    """Project (n, d) vectors to (n, 2) coordinates with one fit, cached.

    Stack the vectors of every model you compare into ``vectors`` so that they share one fit
    (``project_frame`` does this for you). Rows are L2-normalised first (cosine geometry).

    Args:
        vectors: (n, d) sentence embeddings, n >= 2, finite, no all-zero rows.
        method: ``"umap"`` (cosine, seeded) or ``"pca"`` (instant).
        seed: random seed of the fit; the same input and seed give the same output.
        n_neighbors: UMAP neighbourhood size; lowered to n - 1 when there are fewer points.
        min_dist: UMAP minimum distance between embedded points, 0..1.
        n_epochs: UMAP optimisation epochs.

    UMAP specifics: identical rows get identical coordinates (distinct rows are fitted, then
    scattered back); three or fewer distinct rows are placed evenly on a circle, since a
    neighbourhood graph needs more points. PCA ignores ``n_neighbors``, ``min_dist`` and
    ``n_epochs``.

    Returns:
        A read-only (n, 2) float64 array; calling again with equal input returns the same object.

    Raises:
        ValueError: on fewer than two points, NaN/inf or all-zero rows, a non-2-D array, an
            unknown method or out-of-range parameters.

    Example:
        >>> xy = project(np.random.default_rng(0).normal(size=(50, 8)), "pca")
        >>> xy.shape
        (50, 2)
    """
    method = _check_method(method)
    _check_params(n_neighbors, min_dist, n_epochs)
    unit = _as_matrix(vectors)
    params: tuple = (method, int(seed))
    if method == "umap":
        params += (int(n_neighbors), float(min_dist), int(n_epochs))
    key = _key([unit], *params)
    hit = _cache_get(key)
    if hit is not None:
        return hit
    with _one_blas_thread():
        if method == "pca":
            out = _pca(unit, int(seed))
        else:
            out = _umap(unit, int(seed), int(n_neighbors), float(min_dist), int(n_epochs))
    return _cache_put(key, _frozen(np.ascontiguousarray(out, dtype=np.float64)))


def project_frame(
    vectors_by_model: Mapping[str, np.ndarray],
    langs: Sequence[str],
    sentences: Sequence[str],
    pair_ids: Sequence[int],
    method: str = "umap",
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int = UMAP_EPOCHS,
) -> pd.DataFrame:
    """Project every model's vectors of the same sentences by ONE fit into a long-form frame.

    Every matrix in ``vectors_by_model`` has the same rows: row i is ``sentences[i]``, in
    language ``langs[i]``, and rows that are translations of each other share ``pair_ids[i]``
    (the English row of a pair is the one the figures draw lines to).

    Args:
        vectors_by_model: model name -> (n, d) vectors; all with the same n and d. Dict order is
            the order of the models in the frame and in the figures.
        langs: n language codes, e.g. ``"en"``, ``"de"``.
        sentences: n sentences (shown on hover).
        pair_ids: n integers; a translation and its English source share one id.
        method: ``"umap"`` or ``"pca"`` (see :func:`project`).
        seed: random seed of the fit.
        n_neighbors: UMAP neighbourhood size (lowered to the number of points - 1 if needed).
        min_dist: UMAP minimum distance, 0..1.
        n_epochs: UMAP optimisation epochs.

    Returns:
        DataFrame with columns ``x, y, lang, model, sentence, pair_id`` and
        ``n_models * n`` rows, model-major: rows ``[k*n, (k+1)*n)`` are model k's, in input
        order. ``x, y`` float64; ``pair_id`` int64; the others strings.

    Raises:
        ValueError: on no models, mismatched lengths or shapes, or bad vectors (see project).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> v = rng.normal(size=(4, 8))
        >>> df = project_frame({"teacher": v, "student": v}, ["en", "de"] * 2,
        ...                    ["Hi", "Hallo", "Bye", "Tschüss"], [0, 0, 1, 1], "pca")
        >>> list(df.columns), len(df)
        (['x', 'y', 'lang', 'model', 'sentence', 'pair_id'], 8)
    """
    method = _check_method(method)
    _check_params(n_neighbors, min_dist, n_epochs)
    if not vectors_by_model:
        raise ValueError("vectors_by_model is empty; pass at least one model -> (n, d) vectors")
    models = [str(m) for m in vectors_by_model]
    if len(set(models)) != len(models):
        raise ValueError(f"model names must be distinct as strings, got {models}")
    # Checked one by one for messages that name the model; projected stacked, as given, so
    # project(np.vstack(list(vectors_by_model.values()))) is the very same fit (and cache entry).
    units = [_as_matrix(v, f"vectors of model {m!r}") for m, v in vectors_by_model.items()]
    shapes = {m: u.shape for m, u in zip(models, units, strict=True)}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"every model needs vectors of the same sentences and dimension, got shapes {shapes}; "
            "encode the same sentence list with each model (a student needs a projection layer "
            "to the teacher's dimension)"
        )
    n = units[0].shape[0]
    lengths = {"langs": len(langs), "sentences": len(sentences), "pair_ids": len(pair_ids)}
    if any(v != n for v in lengths.values()):
        raise ValueError(
            f"each model has {n} vectors but got {lengths}; pass one lang, sentence and pair_id "
            "per vector row"
        )
    try:
        pid = np.asarray(pair_ids, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("pair_ids must be integers (one per sentence)") from None

    xy = project(
        np.vstack([np.asarray(v, dtype=np.float32) for v in vectors_by_model.values()]),
        method,
        seed=seed,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        n_epochs=n_epochs,
    )
    k = len(models)
    return pd.DataFrame(
        {
            "x": xy[:, 0].astype(np.float64),
            "y": xy[:, 1].astype(np.float64),
            "lang": np.tile(np.asarray([str(s) for s in langs], dtype=object), k),
            "model": np.repeat(np.asarray(models, dtype=object), n),
            "sentence": np.tile(np.asarray([str(s) for s in sentences], dtype=object), k),
            "pair_id": np.tile(pid, k),
        },
        columns=FRAME_COLUMNS,
    )


def _pair_index(pair_ids: Sequence[int], n: int, m: int) -> np.ndarray:
    """``pair_ids`` as an int64 (n,) array of anchor rows in 0..m-1, or raise."""
    arr = np.asarray(pair_ids)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(
            f"pair_ids has shape {arr.shape} but there are {n} translations; pass one anchor "
            "row index per translation"
        )
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(
            "pair_ids must be integers: the row of teacher_en each translation belongs to"
        )
    pid = arr.astype(np.int64)
    bad = (pid < 0) | (pid >= m)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"pair_ids must be rows of teacher_en, 0..{m - 1} (there are {m} English anchors); "
            f"got {int(pid[i])} at row {i} ({int(bad.sum())} out of range)"
        )
    return pid


def teacher_space_frames(
    teacher_en: np.ndarray,
    student_x_by_frame: Mapping[str, np.ndarray],
    langs: Sequence[str],
    sentences: Sequence[str],
    pair_ids: Sequence[int],
    method: str = "umap",
    *,
    seed: int = 0,
    en_sentences: Sequence[str] | None = None,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int = UMAP_EPOCHS,
) -> pd.DataFrame:
    """Students' translations and the teacher's English anchors, in frames of ONE shared map.

    The picture of the method: a translation x, embedded by the student, should land where
    the teacher put its English sentence. The teacher's m anchors and every frame's n student
    vectors (e.g. before, during and after training) are projected by a single fit of all rows
    stacked (L2-normalised, through :func:`project` and its cache), so a position means the same
    in every frame and the anchors do not move.

    Args:
        teacher_en: (m, d) teacher vectors of m English sentences: the anchors.
        student_x_by_frame: frame label -> (n, d) student vectors of the n translations, the
            same rows in every frame, in the teacher's dimension d. Dict order is frame order.
        langs: n language codes of the translations.
        sentences: n translations (shown on hover).
        pair_ids: n integers in 0..m-1: the row of ``teacher_en`` each translation belongs to.
        method: ``"umap"`` or ``"pca"`` (see :func:`project`).
        seed: random seed of the fit.
        en_sentences: the m English sentences (anchor hover); default ``"English sentence i"``.
        n_neighbors: UMAP neighbourhood size.
        min_dist: UMAP minimum distance, 0..1.
        n_epochs: UMAP optimisation epochs.

    Returns:
        Long-form DataFrame with columns ``x, y, lang, model, sentence, pair_id, frame,
        distance`` (:data:`TEACHER_SPACE_COLUMNS`) and ``n_frames * (m + n)`` rows,
        frame-major: per frame the m anchors (``model="teacher"``, ``lang="en"``,
        ``pair_id=0..m-1``, the same ``x, y`` in every frame, ``distance`` NaN), then the n
        translations in input order (``model="student"``). ``distance`` is measured in the
        original space: 1 - cos(student(x), teacher(en of its pair)), 0 when x lands on its
        anchor. ``x, y, distance`` float64; ``pair_id`` int64; the others strings.

    Raises:
        ValueError: on no frames, mismatched lengths or shapes, a frame whose dimension is not
            the teacher's, pair ids outside 0..m-1, or bad vectors (see :func:`project`).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> t = rng.normal(size=(3, 8))
        >>> frames = {"untrained": rng.normal(size=(3, 8)), "distilled": t.copy()}
        >>> df = teacher_space_frames(t, frames, ["de", "fr", "de"], ["Hallo", "Salut", "Tschüss"],
        ...                           [0, 1, 2], "pca")
        >>> len(df), round(float(df[df.frame == "distilled"]["distance"].max()), 6)
        (12, 0.0)
    """
    method = _check_method(method)
    _check_params(n_neighbors, min_dist, n_epochs)
    if not student_x_by_frame:
        raise ValueError(
            "student_x_by_frame is empty; pass at least one frame label -> (n, d) student vectors"
        )
    labels = [str(k) for k in student_x_by_frame]
    if len(set(labels)) != len(labels):
        raise ValueError(f"frame labels must be distinct as strings, got {labels}")
    teacher = _as_matrix(teacher_en, "teacher_en", min_rows=1)
    m, d = teacher.shape
    n = len(langs)
    lengths = {"langs": n, "sentences": len(sentences), "pair_ids": len(pair_ids)}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"got {lengths}; pass one lang, sentence and pair_id per translation (row of each "
            "frame's student vectors)"
        )
    if n < 1:
        raise ValueError("there are no translations; pass at least one (lang, sentence, pair_id)")
    raw: list[np.ndarray] = []
    for label, vectors in zip(labels, student_x_by_frame.values(), strict=True):
        unit = _as_matrix(vectors, f"student vectors of frame {label!r}", min_rows=1)
        if unit.shape[1] != d:
            raise ValueError(
                f"student vectors of frame {label!r} have dimension {unit.shape[1]} but the "
                f"teacher's have {d}: the student's vectors must be in the teacher's space, i.e. "
                "the same dimension (give the student a projection layer to the teacher's "
                "dimension)"
            )
        if unit.shape[0] != n:
            raise ValueError(
                f"student vectors of frame {label!r} have {unit.shape[0]} rows but there are {n} "
                "translations; every frame needs the vectors of the same translations, in order"
            )
        raw.append(np.asarray(vectors, dtype=np.float64))
    pid = _pair_index(pair_ids, n, m)
    if en_sentences is None:
        en_text = [f"English sentence {i}" for i in range(m)]
    else:
        en_text = [str(s) for s in en_sentences]
        if len(en_text) != m:
            raise ValueError(
                f"en_sentences has {len(en_text)} entries but teacher_en has {m} rows; pass one "
                "English sentence per anchor"
            )

    # One fit of everything, anchors once: the same call (and cache entry) for every redraw.
    xy = project(
        np.vstack([np.asarray(teacher_en, dtype=np.float32)] + [v.astype(np.float32) for v in raw]),
        method,
        seed=seed,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        n_epochs=n_epochs,
    )
    # Distances in the original space, float64 so that x == en gives exactly 0 (up to rounding).
    t64 = np.asarray(teacher_en, dtype=np.float64)
    t64 = t64 / np.linalg.norm(t64, axis=1, keepdims=True)  # (m, d)
    k = len(labels)
    rows_per = m + n
    anchor_dist = np.full(m, np.nan)
    x = np.empty(k * rows_per)
    y = np.empty(k * rows_per)
    dist = np.empty(k * rows_per)
    for f, s in enumerate(raw):
        s = s / np.linalg.norm(s, axis=1, keepdims=True)  # (n, d)
        cos = np.einsum("ij,ij->i", s, t64[pid])  # (n,)
        block = slice(f * rows_per, (f + 1) * rows_per)
        x[block] = np.concatenate([xy[:m, 0], xy[m + f * n : m + (f + 1) * n, 0]])
        y[block] = np.concatenate([xy[:m, 1], xy[m + f * n : m + (f + 1) * n, 1]])
        dist[block] = np.concatenate([anchor_dist, np.clip(1.0 - cos, 0.0, 2.0)])
    one = {
        "lang": np.asarray(["en"] * m + [str(s) for s in langs], dtype=object),
        "model": np.asarray(["teacher"] * m + ["student"] * n, dtype=object),
        "sentence": np.asarray(en_text + [str(s) for s in sentences], dtype=object),
        "pair_id": np.concatenate([np.arange(m, dtype=np.int64), pid]),
    }
    return pd.DataFrame(
        {
            "x": x,
            "y": y,
            **{c: np.tile(v, k) for c, v in one.items()},
            "frame": np.repeat(np.asarray(labels, dtype=object), rows_per),
            "distance": dist,
        },
        columns=TEACHER_SPACE_COLUMNS,
    )


def teacher_space_journey(
    teacher_en: np.ndarray,
    student_x_by_frame: Mapping[str, np.ndarray],
    langs: Sequence[str],
    sentences: Sequence[str],
    pair_ids: Sequence[int],
    method: str = "umap",
    *,
    en_sentences: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """A run's journey into the teacher's space: :func:`teacher_space_frames` of every frame,
    and :func:`viz.metrics.teacher_space_numbers` of the first and the last frame (baseline and
    result, the caption of ``viz.figures.teacher_space_animation``; one entry if they are the
    same frame).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> t = rng.normal(size=(3, 4))
        >>> df, numbers = teacher_space_journey(
        ...     t, {"untrained": rng.normal(size=(3, 4)), "distilled": t},
        ...     ["de"] * 3, ["a", "b", "c"], [0, 1, 2], "pca")
        >>> list(numbers), numbers["distilled"]["retrieval"]
        (['untrained', 'distilled'], 1.0)
    """
    from viz.metrics import teacher_space_numbers

    df = teacher_space_frames(
        teacher_en,
        student_x_by_frame,
        langs,
        sentences,
        pair_ids,
        method,
        en_sentences=en_sentences,
    )
    labels = list(student_x_by_frame)
    numbers = {
        label: teacher_space_numbers(teacher_en, student_x_by_frame[label], pair_ids)
        for label in dict.fromkeys([labels[0], labels[-1]])
    }
    return df, numbers


def clear_cache() -> None:
    """Forget every cached projection.

    Example:
        >>> clear_cache()
    """
    with _cache_lock:
        _cache.clear()


def cache_info() -> dict[str, int]:
    """Return ``{"entries": .., "max_entries": ..}`` of the projection cache.

    Example:
        >>> cache_info()["max_entries"]
        8
    """
    with _cache_lock:
        return {"entries": len(_cache), "max_entries": CACHE_SIZE}


def warm_up(seed: int = 0) -> float:
    """Compile UMAP's numba code on tiny data so the first real projection is fast.

    Blocks for 20-40 s in a fresh process on 2 cores (less when numba's on-disk cache is warm),
    then returns at once on later calls. Run it off the request path, e.g. with
    :func:`warm_up_in_background`, and show :func:`is_warm` in the UI.

    Returns:
        Seconds spent.

    Example:
        >>> seconds = warm_up()  # doctest: +SKIP
        >>> is_warm()  # doctest: +SKIP
        True
    """
    start = time.perf_counter()
    with _warm_lock:
        if _warm.is_set():
            return time.perf_counter() - start
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(4, 16))
        tiny = (centres[rng.integers(0, 4, 64)] + 0.3 * rng.normal(size=(64, 16))).astype(
            np.float32
        )
        # Not through project(): the warm-up result must not take a cache slot.
        with _one_blas_thread():
            _umap(_as_matrix(tiny), seed, 15, 0.1, UMAP_EPOCHS)
        _warm.set()
    return time.perf_counter() - start


def warm_up_in_background() -> threading.Thread:
    """Start :func:`warm_up` in a daemon thread and return it (already started).

    Example:
        >>> t = warm_up_in_background()  # doctest: +SKIP
        >>> t.join(); is_warm()  # doctest: +SKIP
        True
    """
    thread = threading.Thread(target=warm_up, name="viz-umap-warm-up", daemon=True)
    thread.start()
    return thread


def is_warm() -> bool:
    """Whether UMAP has been compiled in this process (by warm_up or a real projection).

    Example:
        >>> isinstance(is_warm(), bool)
        True
    """
    return _warm.is_set()
