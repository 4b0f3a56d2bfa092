"""Sentences per second for each way kd can encode, against sentence-transformers' plain
``.encode``, with the quality each keeps: one run, one machine.

For the teacher (all-MiniLM-L6-v2) and the student (the pre-built distilled student, or
``--student``), each path encodes the same sentences (Tatoeba dev sentences of the 12 dev
languages and English, or kd's everyday set where ../shared is absent) in interleaved rounds;
the best round counts:

- ``st``: ``SentenceTransformer.encode`` on the same loaded model (the peer);
- ``torch-fp32``: kd's ``Encoder.encode`` (length-sorted batches);
- ``torch-bf16``: the same under bf16 autocast, only on CPUs with AMX;
- ``onnx-fp32``, ``onnx-int8``: ONNX Runtime (:mod:`kd.models.fast`, :mod:`kd.models.onnx_export`);
- ``static``: a static student folder (``--static DIR``, made by ``kd export --static``),
  through plain sentence-transformers.

Quality, per path: the mean cosine of its vectors to ``torch-fp32``'s; for the student, dev
cross-model retrieval into the teacher's space (Tatoeba dev, ``--eval-pairs`` a language, the
teacher's vectors from PyTorch) and STS across languages (``../shared/data/stsb-multi-dev``).
The cost of the first ONNX export is printed, not counted (it is cached per model).

Run: ``python bench/encode_speed.py [--sentences 256] [--eval-pairs 50] [--static DIR]``
(about 10 minutes on 2 cores; paths whose vectors match PyTorch's share its scores).
The last line reads ``int8_vs_st=R static_vs_student=R`` (sentences per second of the student's
int8 path, and of the static student, over the student's ``st``; ``nan`` where absent).
"""

from __future__ import annotations

import argparse
import atexit
import math
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
TATOEBA = SHARED / "tatoeba-dev"
STS = SHARED / "stsb-multi-dev"


def _sentences(n: int) -> list[str]:
    from kd.data.pairs import read_tatoeba
    from kd.langs import DEV_LANGS
    from kd.models.onnx_export import probe_sentences

    if not TATOEBA.is_dir():
        return (probe_sentences() * (n // 400 + 1))[:n]
    sets = read_tatoeba(TATOEBA, list(DEV_LANGS))
    texts = []
    for i in range(max(len(v) for v in sets.values())):
        for pairs in sets.values():
            if i < len(pairs):
                texts += [pairs[i].other, pairs[i].en]
        if len(texts) >= n:
            break
    return texts[:n]


def _eval_sets(pairs: int):
    from kd.data.pairs import read_tatoeba
    from kd.langs import DEV_LANGS

    if not TATOEBA.is_dir():
        return None
    sets = read_tatoeba(TATOEBA, list(DEV_LANGS))
    # The last pairs of each language: the timed sentences are its first ones.
    return {k: ([p.en for p in v[-pairs:]], [p.other for p in v[-pairs:]]) for k, v in sets.items()}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _paths(encoder, static_dir: str | None, is_student: bool) -> dict:
    """path name -> encode(texts) for one model."""
    import tempfile

    from sentence_transformers import SentenceTransformer

    from kd.models.encoder import cpu_has_fast_bf16
    from kd.models.fast import encoder_for

    # The peer loads the folder kd saves (a delta student becomes a full one on the way).
    folder = tempfile.mkdtemp(prefix="kd-encode-speed-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    plain = SentenceTransformer(str(encoder.save(folder)), device="cpu")
    paths = {
        "st": lambda t: plain.encode(t, batch_size=64, convert_to_numpy=True),
        "torch-fp32": lambda t: encoder.encode(t, precision="fp32"),
    }
    if cpu_has_fast_bf16():
        paths["torch-bf16"] = lambda t: encoder.encode(t, precision="bf16")
    for form in ("onnx-fp32", "onnx-int8"):
        started = time.perf_counter()
        runner = encoder_for(encoder, form)
        spent = time.perf_counter() - started
        if spent > 1:
            print(f"  ({encoder.name}: {form} graph ready in {spent:.0f} s; exported once, cached)")
        paths[form] = runner.encode
    if static_dir and is_student:
        static = SentenceTransformer(static_dir, device="cpu")
        paths["static"] = lambda t: static.encode(t, batch_size=64, convert_to_numpy=True)
    return paths


def _speeds(paths: dict, texts: list[str], rounds: int) -> tuple[dict, dict]:
    best, vectors = {}, {}
    for encode in paths.values():
        encode(texts[:32])  # warm-up
    for _ in range(rounds):
        for name, encode in paths.items():
            started = time.perf_counter()
            vectors[name] = np.asarray(encode(texts), dtype=np.float32)
            best[name] = min(best.get(name, math.inf), time.perf_counter() - started)
    return {k: len(texts) / v for k, v in best.items()}, vectors


def _quality(paths: dict, teacher, eval_sets, sts_sets, same: dict) -> dict:
    """Dev cross-model and STS of each path; a path whose vectors match ``torch-fp32``'s
    (``same``: cosine above 0.9999) shares its scores instead of paying for them again."""
    from kd.evaluate.metrics import evaluate
    from kd.evaluate.sts import sts_report

    scored = {n: e for n, e in paths.items() if n == "torch-fp32" or not same.get(n)}
    out: dict = {name: {} for name in scored}
    if eval_sets:
        reference = {lang: _unit(teacher.encode(en)) for lang, (en, _x) in eval_sets.items()}
        for name, encode in scored.items():
            scores = evaluate(eval_sets, reference, lambda t, e=encode: _unit(e(t)))
            out[name]["cross"] = scores["mean"].get("cross_mean_accuracy", math.nan)
    if sts_sets:
        report = sts_report(sts_sets, teacher.encode, scored)
        for name in scored:
            cross = [v["cross"] for k, v in report[name].items() if k != "en" and "cross" in v]
            out[name]["sts_cross"] = float(np.mean(cross)) if cross else math.nan
    return {name: out.get(name, out["torch-fp32"]) for name in paths}


def main() -> int:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--eval-pairs", type=int, default=50)
    parser.add_argument("--sts-pairs", type=int, default=100)
    parser.add_argument("--student", default=str(ROOT / "assets" / "prebuilt-student"))
    parser.add_argument("--teacher", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--static", default=None, help="a static student folder")
    args = parser.parse_args()

    import torch

    from kd.evaluate.sts import read_sts
    from kd.models.encoder import Encoder, quiet_transformers
    from kd.models.fast import cpu_name

    quiet_transformers()
    texts = _sentences(args.sentences)
    print(f"machine: {cpu_name()}; torch {torch.__version__}; {len(texts)} sentences")
    teacher = Encoder.load(args.teacher)
    student = Encoder.load(args.student)
    eval_sets = _eval_sets(args.eval_pairs)
    sts_sets = read_sts(STS, max_rows=args.sts_pairs) if STS.is_dir() else None
    results = {}
    for role, model in (("teacher", teacher), ("student", student)):
        paths = _paths(model, args.static, role == "student")
        speeds, vectors = _speeds(paths, texts, args.rounds)
        reference = _unit(vectors["torch-fp32"])
        cosine = {
            name: float((reference * _unit(v)).sum(1).mean())
            if v.shape == reference.shape
            else math.nan
            for name, v in vectors.items()
        }
        same = {name: c > 0.9999 for name, c in cosine.items()}
        quality = _quality(paths, teacher, eval_sets, sts_sets, same) if role == "student" else {}
        print(f"\n{role}: {model.name}")
        print(f"  {'path':<11} {'sent/s':>8} {'vs st':>7} {'cos':>7} {'cross':>7} {'STS x':>7}")
        for name, sps in speeds.items():
            q = quality.get(name, {})
            print(
                f"  {name:<11} {sps:8.1f} {sps / speeds['st']:7.2f} {cosine[name]:7.4f} "
                f"{q.get('cross', math.nan):7.3f} {q.get('sts_cross', math.nan):7.1f}"
            )
        results[role] = speeds
    student_speeds = results["student"]
    int8 = student_speeds["onnx-int8"] / student_speeds["st"]
    static = student_speeds.get("static", math.nan) / student_speeds["st"]
    print(f"\nint8_vs_st={int8:.2f} static_vs_student={static:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
