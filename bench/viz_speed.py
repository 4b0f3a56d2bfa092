"""How fast are viz's projections on this machine? PCA, warm and cold UMAP, a cached redraw.

Run: ``python bench/viz_speed.py`` (about 1-2 minutes on 2 CPU cores; ``--quick`` skips the
6,000-point UMAP and the empty-cache cold start).

Data: seeded random clustered vectors, 384 dimensions (MiniLM's width), 30 clusters.
Peer: umap-learn's plain ``UMAP(metric="cosine", random_state=0)``, the call most code makes,
on the same 2,000 points.

Targets (issue 3): warm UMAP of 2,000 points < 5 s; PCA of 6,000 points < 1 s; a cached
redraw < 100 ms. The last line is machine-readable:
``pca_6000_s=.. umap_warm_2000_s=.. cached_redraw_ms=.. cached_vs_first=.. umap_cold_s=..
speedup_vs_plain_umap=..`` (``cached_vs_first``: how many times faster a cached redraw is than
the first fit of the same frame; tests/test_viz.py checks only that it is a cache hit).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from timing import timed  # noqa: E402  (bench/timing.py, beside this script)

from viz import figures, metrics  # noqa: E402
from viz import project as P  # noqa: E402

SIZES = (500, 2000, 6000)
DIM = 384

COLD_SNIPPET = """
import time, numpy as np
t = time.perf_counter()
from viz.project import project
rng = np.random.default_rng(0)
project(rng.normal(size=(500, 384)), "umap")
print(time.perf_counter() - t)
"""


def clustered(n: int, seed: int = 0, k: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, DIM))
    return (centres[rng.integers(0, k, n)] + 0.6 * rng.normal(size=(n, DIM))).astype(np.float32)


def cold_in_fresh_process(empty_numba_cache: bool) -> float:
    """First UMAP call in a new Python process, import of umap included."""
    env = dict(os.environ)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as cache:
        if empty_numba_cache:
            env["NUMBA_CACHE_DIR"] = cache  # nothing compiled on disk: a first install
        out = subprocess.run(
            [sys.executable, "-c", COLD_SNIPPET],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the slowest measurements")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"cpu cores: {os.cpu_count()}  dims: {DIM}  python {sys.version.split()[0]}")

    cold_disk = cold_in_fresh_process(empty_numba_cache=False)
    print(f"cold first UMAP call, fresh process (500 pts, import included): {cold_disk:6.2f} s")
    cold_empty = float("nan")
    if not args.quick:
        cold_empty = cold_in_fresh_process(empty_numba_cache=True)
        print(f"  same with an empty numba cache (first run after install):    {cold_empty:6.2f} s")

    warm = P.warm_up()
    print(f"warm_up() in this process:                                       {warm:6.2f} s")

    rows = []
    data = {n: clustered(n, seed=n) for n in SIZES}
    for n in SIZES:
        pca = timed(lambda x=data[n]: (P.clear_cache(), P.project(x, "pca")), repeat=3)
        if args.quick and n > 2000:
            umap_s = float("nan")
        else:
            P.clear_cache()
            umap_s = timed(lambda x=data[n]: P.project(x, "umap"))
        rows.append((n, pca, umap_s))
    print(f"\n{'points':>7} {'pca_s':>8} {'umap_warm_s':>12}")
    for n, pca, umap_s in rows:
        print(f"{n:>7} {pca:>8.3f} {umap_s:>12.2f}")

    import umap  # the peer: what most code calls

    x2000 = data[2000]
    plain = timed(lambda: umap.UMAP(metric="cosine", random_state=0, n_jobs=1).fit_transform(x2000))
    ours = dict((n, u) for n, _, u in rows)[2000]
    print(
        f"\nplain umap.UMAP(metric='cosine') on 2,000 points: {plain:.2f} s "
        f"(viz.project: {ours:.2f} s, {plain / ours:.1f}x faster)"
    )

    # Cached redraw: the app's aligned-space view of 3 models x 2,000 sentences = 6,000 points.
    n = 2000
    langs = ["en"] * (n // 2) + ["de"] * (n // 2)
    pids = list(range(n // 2)) * 2
    sents = [f"sentence {i}" for i in range(n)]
    models = {
        "teacher": data[6000][:n],
        "untrained": data[6000][n : 2 * n],
        "distilled": data[6000][2 * n :],
    }
    P.clear_cache()
    first = timed(lambda: P.project_frame(models, langs, sents, pids, "pca"))
    cached = timed(lambda: P.project_frame(models, langs, sents, pids, "pca"), repeat=5)
    df = P.project_frame(models, langs, sents, pids, "pca")
    figures.aligned_scatter(df)  # plotly's first figure pays its own imports
    fig_s = timed(
        lambda: figures.aligned_scatter(P.project_frame(models, langs, sents, pids, "pca")),
        repeat=3,
    )
    trust = timed(
        lambda: metrics.projection_trustworthiness(
            np.vstack(list(models.values())), df[["x", "y"]].to_numpy()
        )
    )
    print(
        f"\n6,000-point frame: first {first:.3f} s, cached redraw {cached * 1000:.1f} ms "
        f"({first / cached:.0f}x faster than the first fit), "
        f"cached redraw + aligned_scatter {fig_s * 1000:.0f} ms; "
        f"trustworthiness (2,000-pt subsample) {trust:.2f} s"
    )

    pca6000 = rows[-1][1]
    print("\ntargets: umap_warm_2000 < 5 s, pca_6000 < 1 s, cached_redraw < 100 ms")
    print(
        f"pca_6000_s={pca6000:.3f} umap_warm_2000_s={ours:.2f} "
        f"cached_redraw_ms={cached * 1000:.1f} cached_vs_first={first / cached:.0f} "
        f"umap_cold_s={cold_disk:.1f} "
        f"speedup_vs_plain_umap={plain / ours:.1f}"
    )


if __name__ == "__main__":
    main()
