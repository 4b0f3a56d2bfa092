"""Peak memory of the streaming path against the corpus size: flat, or not?

Writes two synthetic corpora (``--small`` and ``--large`` English/French pairs, default 100,000
and 1,000,000) in the vocabulary of the tests' tiny models, then runs the same ``kd distill
--stream`` on each in a fresh process and a fresh kd cache: the same models, the same number of
steps (``--steps``), the frozen-layer cache on disk (``--freeze-layers 1``), 100 held-out pairs.
Everything a corpus costs is paid (reading it twice, deduplicating its English side, the teacher
encoding every English sentence into its float16 cache, the frozen layers of every item written
to disk); only the training steps are the same. The peak resident set of each run comes from the
kernel (``wait4``'s ``ru_maxrss``, which counts memory-mapped pages the process touched).

Run: ``python bench/scale_memory.py [--small N] [--large N] [--steps S]``. The last line reads
``memory_ratio=R``: the large run's peak over the small one's (the issue asks for at most 1.3).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_pairs(path: Path, n: int, seed: int = 0) -> None:
    """``n`` English/French pairs of 4-12 words (almost all English sides distinct)."""
    from tests.conftest import WORDS

    en_words, fr_words = WORDS[:17], WORDS[17:30]
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("en\tfr\n")
        for _ in range(n):
            k = rng.randint(4, 12)
            en = " ".join(rng.choices(en_words, k=k))
            fr = " ".join(rng.choices(fr_words, k=k))
            fh.write(f"{en}\t{fr}\n")


def run(n: int, work: Path, teacher: str, student: str, steps: int) -> dict:
    data = work / f"pairs-{n}.tsv"
    write_pairs(data, n)
    argv = [
        sys.executable,
        "-m",
        "kd",
        "distill",
        "--stream",
        "--out",
        str(work / f"student-{n}"),
        "--teacher",
        teacher,
        "--student",
        student,
        "--langs",
        "fr",
        "--data",
        str(data),
        "--max-pairs",
        "0",
        "--english-rows",
        "0",
        "--eval-pairs",
        "100",
        "--batch-size",
        "32",
        "--max-steps",
        str(steps),
        "--freeze-layers",
        "1",
        "--checkpoint-every",
        "0",
        "--precision",
        "fp32",
        "--device",
        "cpu",
    ]
    env = os.environ | {"KD_CACHE": str(work / f"cache-{n}"), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the run on {n} pairs failed:\n{_err.decode()[-2000:]}")
    return {
        "pairs": n,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "seconds": time.perf_counter() - started,
        "disk_mib": sum(f.stat().st_size for f in (work / f"cache-{n}").rglob("*") if f.is_file())
        / 1024**2,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    from tests.conftest import _build_tiny_bert

    with tempfile.TemporaryDirectory(prefix="kd-scale-") as tmp:
        work = Path(tmp)
        teacher = str(_build_tiny_bert(work / "teacher", seed=0))
        student = str(_build_tiny_bert(work / "student", seed=1))
        rows = [run(n, work, teacher, student, args.steps) for n in (args.small, args.large)]
    for r in rows:
        print(
            f"{r['pairs']:>9,} pairs: peak RSS {r['peak_rss_mib']:.0f} MiB, "
            f"{r['seconds']:.0f} s, {r['disk_mib']:.0f} MiB of cache on disk, {args.steps} steps"
        )
    print(f"memory_ratio={rows[1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.3f}")


if __name__ == "__main__":
    main()
