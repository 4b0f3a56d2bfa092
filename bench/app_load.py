"""How does the app hold up under load? 20 visitors for a minute while one more trains.

Run: ``python bench/app_load.py`` (about 3 minutes on 2 CPU cores with the default models:
launch, model loading, the timed minute, the end of the training).

``app.py`` is started as its own process (as ``bench/app_latency.py`` does) with the default
teacher and student. Once both are loaded, one visitor starts a distillation on a tiny budget
(de, fr; 20 pairs each, 100 English rows, one epoch) and 20 others, each its own
``gradio_client`` session, alternate for ``--seconds`` between

- Compare: the 10 benchmark sentences, one of them new on every call (so that each call
  encodes, rather than hitting the app's vector cache), and
- Aligned spaces: the built-in set, 4 languages x 16 sentences, PCA, all three models.

Checked on every answer: it is the asking visitor's (their new sentence labels the heatmaps)
and no visitor but the trainer sees a distilled student. After the minute the trainer's Compare
must show its student and a new visitor's must not.

Printed: requests served per endpoint, p50/p95/max latency, errors, the server's peak resident
memory (sampled every 0.25 s with psutil, children included) and the training's duration.
The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import (  # noqa: E402
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    SENTENCES,
    free_port,
    launch_app,
)

ALIGNED_LANGS = "de,fr,ja,ar"


class ServerMemory:
    """Peak resident memory of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        try:
            procs = [self.process, *self.process.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return 0

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def heatmap_names(plot_payload) -> list[str]:
    plot = plot_payload["plot"] if isinstance(plot_payload, dict) else plot_payload
    data = json.loads(plot)["data"] if isinstance(plot, str) else plot["data"]
    return [trace["name"] for trace in data if trace["type"] == "heatmap"]


def draw_aligned(client, models: list[str], teacher: str, student: str):
    """One Aligned-spaces request: the built-in sentences of ``ALIGNED_LANGS``, 16 a language,
    PCA, the given models; returns (figure, numbers Markdown, cosine table)."""
    return client.predict(
        "built-in sentences",
        "",
        None,
        ALIGNED_LANGS,
        16,
        "pca",
        models,
        teacher,
        student,
        api_name="/aligned",
    )


def visitor_loop(
    i: int, url: str, teacher: str, student: str, deadline: float, out: dict, lock
) -> None:
    from gradio_client import Client

    try:
        client = Client(url, verbose=False)
    except Exception as err:
        with lock:
            out["errors"].append(f"visitor {i} could not connect: {err!r}")
        return
    k = 0
    while time.monotonic() < deadline:
        k += 1
        endpoint = "compare" if (i + k) % 2 else "aligned"
        mine = f"Visitor {i} writes sentence number {k}."
        started = time.perf_counter()
        try:
            if endpoint == "compare":
                text = "\n".join([*SENTENCES[:-1], mine])
                plot, _ = client.predict(text, teacher, student, api_name="/compare")
                problem = None
                if "student, distilled" in heatmap_names(plot):
                    problem = f"visitor {i} saw a distilled student that is not theirs"
                elif mine not in json.dumps(plot, ensure_ascii=False):  # the heatmaps' labels
                    problem = f"visitor {i} got an answer without their own sentence"
            else:
                _, numbers, _, _ = draw_aligned(
                    client, ["teacher", "untrained", "distilled"], teacher, student
                )
                problem = (
                    None
                    if "No distilled student yet" in numbers
                    else f"visitor {i} saw a distilled student that is not theirs"
                )
        except Exception as err:
            problem = f"visitor {i} {endpoint}: {str(err)[:200]!r}"
        seconds = time.perf_counter() - started
        with lock:
            out[endpoint].append(seconds)
            if problem:
                out["errors"].append(problem)


def summary(times: list[float]) -> str:
    if not times:
        return "no requests"
    return (
        f"{len(times):4d} requests · p50 {statistics.median(times):6.2f} s · p95 "
        f"{float(np.percentile(times, 95)):6.2f} s · max {max(times):6.2f} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default=DEFAULT_TEACHER)
    parser.add_argument("--student", default=DEFAULT_STUDENT)
    parser.add_argument("--visitors", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--no-train", action="store_true", help="no visitor trains meanwhile")
    args = parser.parse_args(argv)

    from gradio_client import Client

    load_before = os.getloadavg()
    log_path = Path(tempfile.gettempdir()) / "kd-app-load.log"
    proc, url, first_page = launch_app(
        free_port(), log_path, preload=f"{args.teacher},{args.student}"
    )
    results: dict = {"compare": [], "aligned": [], "errors": []}
    try:
        started = time.perf_counter()
        warm = Client(url, verbose=False)
        warm.predict("\n".join(SENTENCES), args.teacher, args.student, api_name="/compare")
        draw_aligned(warm, ["teacher", "untrained"], args.teacher, args.student)
        models_ready = time.perf_counter() - started
        memory = ServerMemory(proc.pid)

        trainer, job, train_started = None, None, time.perf_counter()
        if not args.no_train:
            trainer = Client(url, verbose=False)
            form = [args.teacher, args.student, ["de", "fr"], [], 20, 100, 1, 32, 1e-4, "mse"]
            form += [20, 1, 8, None]
            job = trainer.submit(*form, api_name="/distill")

        lock = threading.Lock()
        deadline = time.monotonic() + args.seconds
        threads = [
            threading.Thread(
                target=visitor_loop,
                args=(i, url, args.teacher, args.student, deadline, results, lock),
            )
            for i in range(args.visitors)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        visiting = time.monotonic() - (deadline - args.seconds)

        train_s = float("nan")
        if job is not None:
            final = job.result(timeout=1200)
            train_s = time.perf_counter() - train_started
            if "Distillation" not in str(final[0]):
                results["errors"].append(f"the training did not finish: {final[0]!r}")
            plot, _ = trainer.predict(
                "\n".join(SENTENCES), args.teacher, args.student, api_name="/compare"
            )
            if heatmap_names(plot)[-1:] != ["student, distilled"]:
                results["errors"].append("the trainer does not see its own student")
        plot, _ = Client(url, verbose=False).predict(
            "\n".join(SENTENCES), args.teacher, args.student, api_name="/compare"
        )
        if "student, distilled" in heatmap_names(plot):
            results["errors"].append("a new visitor sees someone's distilled student")
        peak = memory.stop()
    finally:
        proc.terminate()
        proc.wait(30)
    load_after = os.getloadavg()

    served = len(results["compare"]) + len(results["aligned"])
    print(
        f"machine: {os.cpu_count()} CPU cores; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f}; server log: {log_path}"
    )
    print(f"launch -> first page {first_page:.1f} s; models loaded after {models_ready:.1f} s more")
    print(
        f"{args.visitors} visitors for {visiting:.0f} s"
        + ("" if args.no_train else " while one more trains")
        + f": {served} requests served ({served / visiting:.1f}/s)"
    )
    print(f"  Compare, 10 sentences       {summary(results['compare'])}")
    print(f"  Aligned, 64 x 3 models, PCA {summary(results['aligned'])}")
    print(f"errors: {len(results['errors'])}")
    for line in results["errors"][:10]:
        print(f"  {line}")
    print(
        f"server peak RSS {peak / 2**20:,.0f} MB (after loading the models: "
        f"{memory.start / 2**20:,.0f} MB)"
    )
    if not args.no_train:
        print(f"training (tiny budget), submitted to finished: {train_s:.1f} s")

    def pct(times: list[float], q: float) -> float:
        return float(np.percentile(times, q)) if times else float("nan")

    fields = {
        "visitors": args.visitors,
        "seconds": round(visiting, 1),
        "requests": served,
        "compare_n": len(results["compare"]),
        "compare_p50_s": pct(results["compare"], 50),
        "compare_p95_s": pct(results["compare"], 95),
        "aligned_n": len(results["aligned"]),
        "aligned_p50_s": pct(results["aligned"], 50),
        "aligned_p95_s": pct(results["aligned"], 95),
        "errors": len(results["errors"]),
        "peak_rss_mb": round(peak / 2**20),
        "train_s": train_s,
        "load_before": load_before[0],
    }
    print(
        " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
    )
    if results["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
