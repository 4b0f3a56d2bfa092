"""Does the public server hold under hostile clients? Issue 27's attacks, replayed.

Run: ``python bench/abuse.py`` (about 3 minutes on 2 CPU cores with the default models: launch,
model loading, the attacks, five students brought back).

``app.py`` is started as its own process (as ``bench/app_latency.py`` does) with the issue's
small budget: ``KD_DISK_BUDGET_MB=200``, ``KD_UPLOAD_QUOTA_MB=30``, and ``KD_BEHIND_PROXY=1`` so
that one machine can play many clients (each attack names its own ``X-Forwarded-For``). Its
visitors' folder and upload folder live in a fresh temporary folder. Once the default models are
loaded, the attacks run one after another:

1. 6 x 25 MB uploads whose file comes under a form field not named ``files``, and 4 x 25 MB
   uploads cut off halfway (the client hangs up), each from its own address (under its quota);
2. 8 x 30 MB chunked uploads at once, each declaring ``Content-Length: 100``;
3. 3 x 25 MB uploads at once from one address, against its 30 MB an hour;
4. a student zip whose config declares a 300,000 x 1,024 vocabulary over a 2 x 2 weights file;
   then the same valid delta (a few MB, over the default student) brought back by 5 sessions,
   each of which the server loads as a model of its own;
5. one Draw of 500 sentences a language of ~90 words in de, fr and es (PCA; the same 500
   English sentences in each, so 2,000 sentences: within the count cap, as in the issue);

and the doubtful items: an 80 MB multipart body to ``component_server``, a 116 MB JSON body
declared to the API, a file value naming a remote URL, a model name as a number, NaN for the
sentences per language, an image in the Search query.

Meanwhile three threads sample, every 0.25 s, the disk held for visitors (the visitors' folder
and gradio's upload folder), the server's resident memory (children included), and the first
page's response time (``GET /``). Printed: each attack's answers, then the peaks against the
limits: disk within the budget, memory within ``the RSS before the attacks + KD_MODEL_CACHE_MB``
(the models the cache may add; the shared ones are already in the baseline), the first page
under 2 s. The last line is machine-readable; the exit status is 1 when a limit is broken.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import DEFAULT_STUDENT, DEFAULT_TEACHER, free_port, launch_app  # noqa: E402

MB = 2**20
DISK_BUDGET_MB = 200
UPLOAD_QUOTA_MB = 30
FIRST_PAGE_LIMIT_S = 2.0


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # a file deleted meanwhile
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class Sampler:
    """Samples disk held, server memory and the first page's response time in threads."""

    def __init__(self, pid: int, url: str, folders: list[Path]) -> None:
        self.process = psutil.Process(pid)
        self.url, self.folders = url, folders
        self.disk: list[int] = []
        self.rss: list[int] = []
        self.page: list[float] = []
        self.page_at: list[float] = []  # when each first-page request started
        self.page_errors = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._first_page, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def rss_now(self) -> int:
        try:
            procs = [self.process, *self.process.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            self.disk.append(sum(folder_bytes(f) for f in self.folders))
            self.rss.append(self.rss_now())

    def _first_page(self) -> None:
        import httpx

        while not self._stop.wait(0.25):
            started = time.perf_counter()
            try:
                ok = httpx.get(self.url, timeout=30).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.page.append(time.perf_counter() - started)
            self.page_at.append(started)
            self.page_errors += not ok

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


# ---- raw HTTP, for what httpx will not send -----------------------------------------------------
def multipart(field: str, filename: str, size: int) -> tuple[str, bytes]:
    boundary = "kdabuse" + os.urandom(6).hex()
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return (
        f"multipart/form-data; boundary={boundary}",
        head + os.urandom(size) + f"\r\n--{boundary}--\r\n".encode(),
    )


def raw_request(port: int, path: str, headers: dict[str, str]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server answered and stopped reading
        sock.sendall(data)


def status_of(sock: socket.socket) -> int:
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    sock.close()
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0


def in_parallel(fn, args: list) -> list:
    out: list = [None] * len(args)

    def run(i: int) -> None:
        out[i] = fn(*args[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# ---- the attacks ---------------------------------------------------------------------------------
def junk_field(port: int, i: int) -> int:
    content_type, body = multipart("junk", "x.zip", 25 * MB)
    sock = raw_request(
        port,
        "/gradio_api/upload",
        {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "X-Forwarded-For": f"10.1.0.{i}",
        },
    )
    send(sock, body)
    return status_of(sock)


def cut_off(port: int, i: int) -> str:
    content_type, body = multipart("files", "half.zip", 25 * MB)
    sock = raw_request(
        port,
        "/gradio_api/upload",
        {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "X-Forwarded-For": f"10.2.0.{i}",
        },
    )
    send(sock, body[: len(body) // 2])
    sock.close()
    return "hung up"


def chunked(port: int, i: int) -> int:
    content_type, body = multipart("files", "big.zip", 30 * MB)
    sock = raw_request(
        port,
        "/gradio_api/upload",
        {
            "Content-Type": content_type,
            "Content-Length": "100",
            "Transfer-Encoding": "chunked",
            "X-Forwarded-For": f"10.3.0.{i}",
        },
    )
    step = 1 * MB
    for start in range(0, len(body), step):
        piece = body[start : start + step]
        send(sock, f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    send(sock, b"0\r\n\r\n")
    return status_of(sock)


def parallel_upload(port: int, _i: int) -> int:
    content_type, body = multipart("files", "p.zip", 25 * MB)
    sock = raw_request(
        port,
        "/gradio_api/upload",
        {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "X-Forwarded-For": "10.4.0.1",
        },
    )
    send(sock, body)
    return status_of(sock)


def inflated_zip(folder: Path) -> Path:
    """The issue's 3.8 MB zip: the default student's tokenizer and modules, a 2 x 2 weights
    file, a config declaring a 300,000-word vocabulary 1,024 wide."""
    from safetensors.torch import save_file
    from torch import zeros

    from kd.models.registry import resolve_model

    source = Path(resolve_model(DEFAULT_STUDENT))
    out = folder / "inflated"
    out.mkdir(parents=True)
    for name in ("modules.json", "tokenizer.json", "tokenizer_config.json", "config.json"):
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    for sub in source.iterdir():
        if sub.is_dir() and (sub / "config.json").is_file():
            shutil.copytree(sub, out / sub.name)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config.update(vocab_size=300_000, hidden_size=1024, num_attention_heads=16)
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file({"x": zeros(2, 2)}, str(out / "model.safetensors"))
    return zip_folder(out, folder / "inflated.zip")


def valid_delta(folder: Path) -> Path:
    """A delta over the default student changing its last layer's output projection."""
    from kd.models.delta import weights_fingerprint, write_delta
    from kd.models.encoder import Encoder

    student = Encoder.load(DEFAULT_STUDENT)
    keys = [k for k in student.transformer.state_dict() if k.endswith("output.dense.weight")]
    out = write_delta(
        student, folder / "run-1", DEFAULT_STUDENT, weights_fingerprint(student), {keys[-1]}
    )
    del student
    return zip_folder(out, folder / "delta.zip")


def zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, f"run-1/{file.relative_to(folder).as_posix()}")
    return path


def load_zip(url: str, archive: Path, address: str) -> str:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, headers={"X-Forwarded-For": address})
    try:
        return str(client.predict(handle_file(str(archive)), api_name="/load_student"))[:90]
    except Exception as err:
        return f"refused: {str(err)[:110]}"


def long_pairs(folder: Path) -> Path:
    """500 English sentences of ~90 words, each with a de, fr and es translation (``.jsonl``:
    one file, three languages): 2,000 sentences a model, the count cap's own maximum."""
    import random

    rng = random.Random(0)
    words = ["the", "cat", "sits", "on", "a", "big", "red", "mat", "and", "dog", "runs", "day"]
    english = [" ".join(rng.choice(words) for _ in range(90)) + f" {i}" for i in range(500)]
    rows = [
        json.dumps({"en": en, "text": f"{lang}: {en.upper()}", "lang": lang})
        for lang in ("de", "fr", "es")
        for en in english
    ]
    path = folder / "long.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def api_error(url: str, api: str, data: list) -> str:
    """The API's answer to one call: its one-line error, or 'ok'."""
    import httpx

    event = httpx.post(
        f"{url}gradio_api/call/{api}",
        content=json.dumps({"data": data}),
        headers={"Content-Type": "application/json", "X-Forwarded-For": "10.8.0.1"},
        timeout=60,
    )
    if event.status_code != 200:
        return f"{event.status_code}: {event.text[:100]}"
    stream = httpx.get(f"{url}gradio_api/call/{api}/{event.json()['event_id']}", timeout=600)
    if "event: error" not in stream.text:
        return "ok"
    return stream.text.split("event: error", 1)[1].strip()[:140]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=5, help="students brought back (item 4)")
    args = parser.parse_args(argv)
    import httpx

    work = Path(tempfile.mkdtemp(prefix="kd-abuse-"))
    uploads, visitors_tmp = work / "gradio", work / "tmp"
    visitors_tmp.mkdir()
    os.environ.update(
        GRADIO_TEMP_DIR=str(uploads),
        TMPDIR=str(visitors_tmp),  # the server's visitors' folder: $TMPDIR/kd-app
        KD_DISK_BUDGET_MB=str(DISK_BUDGET_MB),
        KD_UPLOAD_QUOTA_MB=str(UPLOAD_QUOTA_MB),
        KD_RUN_RESERVE_MB="20",
        KD_BEHIND_PROXY="1",
    )
    cache_mb = float(os.environ.get("KD_MODEL_CACHE_MB", 2048))
    print("making the attack's files (a valid delta loads the default student here)…")
    bad_zip, good_zip, pairs = inflated_zip(work), valid_delta(work), long_pairs(work)
    port = free_port()
    proc, url, first_page = launch_app(
        port, work / "server.log", preload=f"{DEFAULT_TEACHER},{DEFAULT_STUDENT}"
    )
    results: dict[str, object] = {}
    failed: list[str] = []
    try:
        from gradio_client import Client

        warm = Client(url, verbose=False)
        warm.predict("the cat\nle chat", DEFAULT_TEACHER, DEFAULT_STUDENT, api_name="/compare")
        sampler = Sampler(proc.pid, url, [uploads, visitors_tmp / "kd-app"])
        time.sleep(3.0)  # the first page with no attack, for comparison
        quiet = list(sampler.page)
        baseline_rss = sampler.rss_now()
        started = time.perf_counter()

        phases: list[tuple[str, float, float]] = []

        def phase(name: str, started_at: float) -> None:
            phases.append((name, started_at, time.perf_counter()))

        t = time.perf_counter()
        results["1 junk field, 6 x 25 MB"] = in_parallel(junk_field, [(port, i) for i in range(6)])
        results["1 cut off, 4 x 25 MB"] = in_parallel(cut_off, [(port, i) for i in range(4)])
        phase("1", t)
        t = time.perf_counter()
        results["2 chunked, CL 100, 8 x 30 MB"] = in_parallel(
            chunked, [(port, i) for i in range(8)]
        )
        phase("2", t)
        t = time.perf_counter()
        results["3 one address, 3 x 25 MB at once"] = sorted(
            in_parallel(parallel_upload, [(port, i) for i in range(3)])
        )
        phase("3", t)
        t = time.perf_counter()
        results["4 inflated config zip"] = load_zip(url, bad_zip, "10.5.0.1")
        results[f"4 valid delta, {args.sessions} sessions"] = [
            load_zip(url, good_zip, f"10.6.0.{i}")[:40] for i in range(args.sessions)
        ]
        phase("4", t)
        t = time.perf_counter()
        aligned = [
            "uploaded file",
            "",
            {"path": "", "meta": {"_type": "gradio.FileData"}},
            "de,fr,es",
            500,
            "pca",
            ["teacher", "untrained"],
            DEFAULT_TEACHER,
            DEFAULT_STUDENT,
        ]
        uploaded = httpx.post(
            f"{url}gradio_api/upload",
            files=[("files", ("long.jsonl", pairs.read_bytes(), "text/plain"))],
            headers={"X-Forwarded-For": "10.7.0.1"},
            timeout=60,
        )
        aligned[2]["path"] = uploaded.json()[0]
        draw_started = time.perf_counter()
        results["5 Draw, 3 x 500 sentences of ~90 words"] = api_error(url, "aligned", aligned)
        results["5 ... answered after (s)"] = round(time.perf_counter() - draw_started, 2)
        phase("5", t)
        t = time.perf_counter()

        sock = raw_request(
            port,
            "/gradio_api/component_server",
            {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(80 * MB)},
        )
        send(sock, b"--x\r\n" + os.urandom(MB))
        results["? multipart to component_server, 80 MB"] = status_of(sock)
        sock = raw_request(
            port,
            "/gradio_api/queue/join",
            {"Content-Type": "application/json", "Content-Length": str(116 * MB)},
        )
        results["? 116 MB JSON body"] = status_of(sock)
        remote = {"path": "https://example.com/huge.tsv", "meta": {"_type": "gradio.FileData"}}
        results["? remote file URL"] = api_error(
            url, "aligned", [*aligned[:2], remote, *aligned[3:]]
        )
        results["? model name as a number"] = api_error(
            url, "compare", ["the cat\nle chat", 123, DEFAULT_STUDENT]
        )
        results["? NaN sentences per language"] = api_error(
            url, "aligned", ["built-in sentences", "", None, "de", float("nan"), *aligned[5:]]
        )
        notes = Client(url, verbose=False).predict(
            "![x](https://example.com/p.png) cat",
            3,
            "all languages",
            DEFAULT_TEACHER,
            DEFAULT_STUDENT,
            api_name="/search",
        )[0]
        results["? image in the Search query renders"] = "![" in notes
        after = httpx.post(
            f"{url}gradio_api/upload",
            files=[("files", ("after.tsv", b"en\tfr\nthe cat\tle chat\n", "text/plain"))],
            headers={"X-Forwarded-For": "10.9.0.1"},
            timeout=60,
        )
        results["a newcomer's upload after the attacks"] = after.status_code
        phase("doubtful", t)
        attack_s = time.perf_counter() - started
        time.sleep(1.0)
        sampler.stop()
        loose = sorted(uploads.glob("tmp*")) if uploads.is_dir() else []
        if loose:  # the guard's sweeper deletes them within a minute while no upload arrives
            sizes = ", ".join(f"{p.stat().st_size / MB:.1f} MB" for p in loose if p.exists())
            print(f"after the attacks: loose temporary files ({sizes}); waiting for the sweep")
            deadline = time.monotonic() + 75
            while time.monotonic() < deadline and any(p.exists() for p in loose):
                time.sleep(1.0)
    finally:
        proc.terminate()
        proc.wait(30)

    leftovers = [p for p in uploads.glob("tmp*")] if uploads.is_dir() else []
    described = [f"{p.name} ({p.stat().st_size / MB:.1f} MB)" for p in leftovers if p.exists()]
    for name, value in results.items():
        print(f"{name:45s} {value}")
    disk_peak, rss_peak = max(sampler.disk), max(sampler.rss)
    rss_cap = baseline_rss + cache_mb * MB
    page_p50 = statistics.median(sampler.page)
    page_max = max(sampler.page)
    print(f"launch -> first page {first_page:.1f} s; attacks took {attack_s:.0f} s")
    print(f"disk held for visitors: peak {disk_peak / MB:,.0f} MB of a {DISK_BUDGET_MB} MB budget")
    print(
        f"server memory: peak {rss_peak / MB:,.0f} MB; before the attacks {baseline_rss / MB:,.0f}"
        f" MB; cap {rss_cap / MB:,.0f} MB (that + KD_MODEL_CACHE_MB {cache_mb:,.0f})"
    )
    print(
        f"first page before the attacks: {len(quiet)} requests, max "
        f"{max(quiet, default=float('nan')):.2f} s; load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"first page during the attacks: {len(sampler.page)} requests, p50 {page_p50:.2f} s, "
        f"max {page_max:.2f} s, {sampler.page_errors} failed (limit {FIRST_PAGE_LIMIT_S:.0f} s)"
    )
    for name, t0, t1 in phases:
        times = [d for at, d in zip(sampler.page_at, sampler.page, strict=True) if t0 <= at <= t1]
        worst = f"max {max(times):.2f} s of {len(times)}" if times else "no request"
        print(f"  first page during attack {name:8s} ({t1 - t0:5.1f} s): {worst}")
    print(f"temporary files left in the upload folder after the sweep: {described or 'none'}")
    if disk_peak > DISK_BUDGET_MB * MB:
        failed.append("disk over the budget")
    if rss_peak > rss_cap:
        failed.append("memory over the cap")
    if page_max > FIRST_PAGE_LIMIT_S or sampler.page_errors:
        failed.append("first page too slow or failing")
    if leftovers:
        failed.append("temporary files left")
    fields = {
        "disk_peak_mb": round(disk_peak / MB),
        "disk_budget_mb": DISK_BUDGET_MB,
        "rss_peak_mb": round(rss_peak / MB),
        "rss_before_mb": round(baseline_rss / MB),
        "rss_cap_mb": round(rss_cap / MB),
        "first_page_p50_s": round(page_p50, 3),
        "first_page_max_s": round(page_max, 3),
        "leftovers": len(leftovers),
        "failed": ",".join(failed) or "none",
    }
    print(" ".join(f"{k}={v}" for k, v in fields.items()))
    shutil.rmtree(work, ignore_errors=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
