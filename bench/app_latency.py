"""How responsive is the app? Measured from outside with ``gradio_client``, against ``app.py``.

Run: ``python bench/app_latency.py`` (2-4 minutes on 2 CPU cores with the default models;
``--distill`` adds a short distillation on a tiny budget through the API; ``--screenshots DIR``
drives the page in headless Chromium, distilling on a tiny budget, and saves a PNG of each tab).

What it measures:

1. launch -> first page: from starting ``python app.py`` to the first HTTP 200 on ``/`` (the
   models then load in the background); with ``--screenshots``, a visitor opening the page at
   that moment in headless Chromium: seconds to its content (title, and the heatmaps' note
   that they follow) and to the first heatmaps (``page_content_s``, ``page_heatmaps_s``);
2. Compare, 10 sentences in 10 languages: the first call (it waits for the models if they are
   still loading) and the median of 5 warm calls, each with one new sentence so that nothing
   comes from the app's vector cache;
3. aligned space, 1,000 points (teacher + untrained student, 500 Tatoeba sentences each; the
   built-in set, fewer points, when no Tatoeba folder is found): PCA cold (encoding included)
   and cached, UMAP first call and cached, and UMAP on new sentences once UMAP is compiled.

Peer: the same 10 sentences encoded by both models and compared in this process with the
project's ``Encoder`` (no server): the ratio warm-Compare / in-process is the app's overhead
(HTTP, queue, heatmap figure, JSON). The last line is machine-readable:
``first_page_s=.. [page_content_s=.. page_heatmaps_s=..] compare_cold_s=.. compare_warm_s=..
overhead_ratio=.. aligned_points=.. pca_cold_s=.. pca_cached_s=.. umap_first_s=..
umap_cached_s=.. umap_new_s=..``. Measured 2026-12-02 (2 cores, AMD EPYC, the pre-built student
on the page): launch -> first page 4.5 s; a visitor opening it then sees its content after
3.9 s and the heatmaps after 14.5 s (the models still loading; the heatmap area says so).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TATOEBA = ROOT.parent / "shared" / "data" / "tatoeba-dev"
SENTENCES = [
    "The weather is lovely today.",
    "Das Wetter ist heute herrlich.",
    "今天天气很好。",
    "Bugün hava çok güzel.",
    "¿Dónde está la estación de tren más cercana?",
    "一番近い駅はどこですか？",
    "أين أقرب محطة قطار؟",
    "Большое спасибо за помощь.",
    "आपकी मदद के लिए बहुत-बहुत धन्यवाद।",
    "Merci beaucoup pour ton aide.",
]
DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_STUDENT = "intfloat/multilingual-e5-small"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(port: int, log_path: Path, preload: str | None = None, timeout: float = 300.0):
    """Start ``python app.py`` on 127.0.0.1:port; return (process, url, seconds to first page).

    ``preload``: the models the app loads in the background at launch (``KD_PRELOAD``).
    """
    env = os.environ | {
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    if preload is not None:
        env["KD_PRELOAD"] = preload
    url = f"http://127.0.0.1:{port}/"
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"no page after {timeout:.0f} s; see {log_path}")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure_compare(client, teacher: str, student: str, warm_calls: int = 5) -> dict:
    text = "\n".join(SENTENCES)
    cold, _ = timed(lambda: client.predict(text, teacher, student, api_name="/compare"))
    warm = []
    for k in range(warm_calls):
        fresh = "\n".join([*SENTENCES[:-1], f"This is sentence number {k + 1}."])
        seconds, _ = timed(lambda t=fresh: client.predict(t, teacher, student, api_name="/compare"))
        warm.append(seconds)
    return {"compare_cold_s": cold, "compare_warm_s": statistics.median(warm)}


def measure_in_process(teacher: str, student: str, repeat: int = 5) -> float:
    """The peer: encode the 10 sentences with both models and take cosines, no server."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from kd.models.encoder import Encoder, quiet_transformers

    quiet_transformers()
    models = [Encoder.load(teacher), Encoder.load(student)]
    times = []
    for k in range(repeat):
        batch = [*SENTENCES[:-1], f"This is sentence number {k + 1}."]
        start = time.perf_counter()
        for model in models:
            v = model.encode(batch)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            _ = v @ v.T
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_aligned(client, teacher: str, student: str, tatoeba: Path | None) -> dict:
    if tatoeba is not None and tatoeba.is_dir():
        source, folder, langs, per_lang = "Tatoeba directory", str(tatoeba), "de,fr", 125
    else:
        source, folder, langs, per_lang = "built-in sentences", "", "de,fr,es,it,ru,ja,zh,ar", 16

    def draw(method: str, n: int = per_lang):
        return client.predict(
            source,
            folder,
            None,
            langs,
            n,
            method,
            ["teacher", "untrained"],
            teacher,
            student,
            api_name="/aligned",
        )

    out: dict = {}
    out["pca_cold_s"], result = timed(lambda: draw("pca"))
    out["aligned_points"] = 2 * int(result[1].split("**")[1].split()[0].replace(",", ""))
    out["pca_cached_s"], _ = timed(lambda: draw("pca"))
    out["umap_first_s"], _ = timed(lambda: draw("umap"))
    out["umap_cached_s"], _ = timed(lambda: draw("umap"))
    out["umap_new_s"], _ = timed(lambda: draw("umap", per_lang - 1))
    return out


def _show_frame(page, elem: str, index: int) -> None:
    """Move the plotly animation in ``elem`` to frame ``index`` the way a visitor does: a click
    on that step of its slider (the page has no global ``Plotly`` to call)."""
    step = page.locator(f"{elem} .slider-label-group").nth(index)
    step.scroll_into_view_if_needed()
    box = step.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(1200)  # the animation's transition


def measure_distill(client, teacher: str, student: str) -> dict:
    """A short distillation on a tiny budget through the API: time to the first step, total."""
    form = [teacher, student, ["de", "fr"], [], 20, 100, 1, 32, 1e-4, "mse"]
    form += [20, 1, 8, "ridge", None]
    started = time.perf_counter()
    job = client.submit(*form, api_name="/distill")
    first_step = None
    while not job.done():
        outputs = job.outputs()
        if first_step is None and any("step " in str(o[0]) for o in outputs):
            first_step = time.perf_counter() - started
        time.sleep(0.5)
    final = job.result()
    total = time.perf_counter() - started
    if "Distillation" not in str(final[0]):
        raise SystemExit(f"the distillation did not finish: {final[0]!r}")
    return {"distill_first_step_s": first_step or float("nan"), "distill_total_s": total}


def measure_page(url: str, chromium: str = "/usr/bin/chromium") -> dict:
    """A visitor opening the page right after launch, in headless Chromium: seconds to its
    content (the title and the heatmaps' note that they follow) and to the first heatmaps."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(300_000)
        started = time.perf_counter()
        page.goto(url)
        page.get_by_text("Multilingual knowledge distillation").first.wait_for()
        page.get_by_text("the heatmaps follow").first.wait_for()
        content = time.perf_counter() - started
        page.wait_for_function(
            "() => (document.querySelector('#heatmaps .js-plotly-plot')?.data || [])"
            ".filter(d => d.type === 'heatmap').length >= 2"
        )
        heatmaps = time.perf_counter() - started
        browser.close()
    return {"page_content_s": content, "page_heatmaps_s": heatmaps}


def take_screenshots(
    url: str,
    folder: Path,
    teacher: str = DEFAULT_TEACHER,
    student: str = DEFAULT_STUDENT,
    chromium: str = "/usr/bin/chromium",
) -> float:
    """Drive the page in headless Chromium: a tiny-budget distillation (de, fr, ja, zh; 20 pairs
    each, 100 English rows, 1 epoch), Compare with the prefilled sentences, the built-in aligned
    set with PCA then UMAP, the Learn tab. Saves PNGs in ``folder``; returns the distillation's
    seconds. Needs ``pip install playwright`` (no browser download: Debian's chromium is used).
    """
    from playwright.sync_api import sync_playwright

    def say(step: str) -> None:
        print(f"screenshots: {step}…", file=sys.stderr, flush=True)

    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        for label, value in (("teacher (English)", teacher), ("student", student)):
            if value not in (DEFAULT_TEACHER, DEFAULT_STUDENT):
                box = page.get_by_label(label).first
                box.fill(value)
                box.press("Enter")
        page.get_by_role("tab", name="Distill").click()  # the page opens on Compare
        page.locator("#distill-langs label", has_text="(").first.wait_for()
        for code in ("es", "ru", "ar"):
            page.locator("#distill-langs label", has_text=f"{code} · ").first.click()
        page.get_by_text("advanced").click()
        for label, value in (
            ("pairs per language", "20"),
            ("English-only rows", "100"),
            ("epochs", "1"),
            ("held-out pairs per language", "20"),
            ("evaluations during training", "1"),
        ):
            box = page.get_by_label(f"number input for {label}")
            box.fill(value)
            box.press("Tab")
        say("distill")
        started = time.perf_counter()
        page.locator("#start").click()
        page.wait_for_function(
            "() => document.querySelector('#curve .js-plotly-plot')?._fullData?.[0]?._length > 2",
            timeout=600_000,
        )
        page.screenshot(path=str(folder / "distill-running.png"), full_page=True)
        page.get_by_text("Distillation finished").wait_for(timeout=600_000)
        seconds = time.perf_counter() - started
        page.screenshot(path=str(folder / "distill.png"), full_page=True)
        say("journey")
        steps = page.locator("#journey .slider-label-group").count()
        for i in range(steps):  # the frame strip: one PNG per frame of the animation
            _show_frame(page, "#journey", i)
            page.locator("#journey").screenshot(path=str(folder / f"journey-{i}.png"))
        say("compare")
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare-btn").click()
        page.wait_for_function(  # the visitor's student beside the others (pre-built included)
            "() => (document.querySelector('#heatmaps .js-plotly-plot')?.data || [])"
            ".some(d => d.name === 'student, distilled')"
        )
        page.wait_for_timeout(3000)  # the redraw a finished run queues settles first (no dimming)
        page.screenshot(path=str(folder / "compare.png"), full_page=True)
        say("aligned")
        page.get_by_role("tab", name="Aligned spaces").click()
        page.locator("#draw").click()
        page.get_by_text("PCA in").first.wait_for()
        page.screenshot(path=str(folder / "aligned-pca.png"), full_page=True)
        page.get_by_label("umap").check()
        page.locator("#draw").click()
        page.get_by_text("UMAP in").first.wait_for()
        page.screenshot(path=str(folder / "aligned-umap.png"), full_page=True)
        frames = page.locator("#teacher-space .slider-label-group").count()
        for i, name in ((0, "untrained"), (frames - 1, "distilled")):  # pre-built in between
            _show_frame(page, "#teacher-space", i)
            page.locator("#teacher-space").screenshot(
                path=str(folder / f"teacher-space-{name}.png")
            )
        say("search")
        page.get_by_role("tab", name="Search").click()
        page.locator("#search-btn").click()
        page.get_by_text("searched the teacher's own index").first.wait_for()
        page.screenshot(path=str(folder / "search.png"), full_page=True)
        say("learn")
        page.get_by_role("tab", name="Learn").click()
        page.get_by_text("Cite").first.wait_for()
        page.screenshot(path=str(folder / "learn.png"))
        browser.close()
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default=DEFAULT_TEACHER)
    parser.add_argument("--student", default=DEFAULT_STUDENT)
    parser.add_argument("--tatoeba", type=Path, default=TATOEBA)
    parser.add_argument("--distill", action="store_true", help="also run a tiny distillation")
    parser.add_argument("--no-peer", action="store_true", help="skip the in-process peer")
    parser.add_argument(
        "--screenshots",
        type=Path,
        metavar="DIR",
        help="also distil in headless Chromium and save screenshots of every tab in DIR",
    )
    args = parser.parse_args(argv)

    from gradio_client import Client

    log_path = Path(tempfile.gettempdir()) / "kd-app-bench.log"
    proc, url, first_page = launch_app(
        free_port(), log_path, preload=f"{args.teacher},{args.student}"
    )
    try:
        results = {"first_page_s": first_page}
        if args.screenshots:  # a visitor's first view while the server still warms up
            results |= measure_page(url)
        client = Client(url, verbose=False)
        results |= measure_compare(client, args.teacher, args.student)
        results |= measure_aligned(client, args.teacher, args.student, args.tatoeba)
        if args.distill:
            results |= measure_distill(client, args.teacher, args.student)
        if args.screenshots:
            results["browser_distill_s"] = take_screenshots(
                url, args.screenshots, args.teacher, args.student
            )
    finally:
        proc.terminate()
        proc.wait(30)
    if not args.no_peer:
        results["in_process_s"] = measure_in_process(args.teacher, args.student)
        results["overhead_ratio"] = results["compare_warm_s"] / results["in_process_s"]

    print(f"machine: {os.cpu_count()} CPU cores; server log: {log_path}")
    print(f"launch -> first page             {results['first_page_s']:7.2f} s")
    if "page_content_s" in results:
        print(f"  a visitor's page: its content  {results['page_content_s']:7.2f} s")
        print(f"  a visitor's page: heatmaps     {results['page_heatmaps_s']:7.2f} s")
    print(f"Compare, 10 sentences, first     {results['compare_cold_s']:7.2f} s")
    print(f"Compare, 10 sentences, warm      {results['compare_warm_s']:7.3f} s (median of 5)")
    if "in_process_s" in results:
        print(
            f"  in-process peer (no server)    {results['in_process_s']:7.3f} s -> app overhead "
            f"x{results['overhead_ratio']:.2f}"
        )
    n = results["aligned_points"]
    print(f"aligned, {n} points, PCA cold   {results['pca_cold_s']:7.2f} s (encoding included)")
    print(f"aligned, {n} points, PCA cached {results['pca_cached_s']:7.3f} s")
    print(f"aligned, {n} points, UMAP first {results['umap_first_s']:7.2f} s")
    print(f"aligned, {n} points, UMAP cached{results['umap_cached_s']:7.3f} s")
    print(f"aligned, new sentences, UMAP     {results['umap_new_s']:7.2f} s (encoding included)")
    if "distill_total_s" in results:
        print(
            f"distillation, tiny budget        {results['distill_total_s']:7.1f} s (first step "
            f"after {results['distill_first_step_s']:.1f} s)"
        )
    if "browser_distill_s" in results:
        print(f"distillation in the browser      {results['browser_distill_s']:7.1f} s")
        print(f"screenshots: {args.screenshots}")
    print(
        " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in results.items())
    )


if __name__ == "__main__":
    main()
