"""kd's distillation against sentence-transformers' own trainer, in one run, on this machine.

Same teacher, same student, same training items (gettext pairs + everyday English rows), same
batch size, one epoch. The peer is ``SentenceTransformerTrainer`` with ``losses.MSELoss`` (the
loss the sentence-transformers docs give for multilingual distillation), the teacher's vectors
precomputed as labels, as its documentation does. Both are then scored on the Tatoeba dev set
(when ../shared is present, else on held-out gettext pairs) by cross-model accuracy
student(x) -> teacher(en), student-vs-student accuracy and English fidelity.

Also: encoding throughput of ``kd.models.encoder.Encoder.encode`` against
``SentenceTransformer.encode`` on the same sentences and batch size, and the peak resident memory of
each training run (each runs in its own process, so the peaks do not mix).

Run: ``python bench/train_vs_st.py [--items 1200] [--eval-pairs 200]``. The last line reads
``train_speedup=<ratio> encode_speedup=<ratio>``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TATOEBA = ROOT.parent / "shared" / "data" / "tatoeba-dev"


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _items(n_items: int, seed: int):
    """Training texts and their teacher targets: half everyday English, half translations."""
    from kd.config import TrainConfig
    from kd.data.dataset import read_dataset

    cfg = TrainConfig(
        out="/tmp/unused",
        max_pairs=n_items // 24,
        english_rows=n_items // 2,
        eval_pairs=0,
        seed=seed,
    )
    data = read_dataset(cfg)
    return cfg, data


def _eval_sets(eval_pairs: int):
    from kd.data.pairs import read_tatoeba
    from kd.langs import DEV_LANGS

    if not TATOEBA.is_dir():
        return None
    sets = read_tatoeba(TATOEBA, list(DEV_LANGS))
    return {
        k: ([p.en for p in v[:eval_pairs]], [p.other for p in v[:eval_pairs]])
        for k, v in sets.items()
    }


def run_kd(conn, n_items: int, batch_size: int, eval_pairs: int, seed: int) -> None:
    warnings.simplefilter("ignore")
    import torch

    from kd.config import TrainConfig
    from kd.models.encoder import Encoder, quiet_transformers
    from kd.train.run import distill

    quiet_transformers()
    torch.set_num_threads(torch.get_num_threads())
    cfg0, data = _items(n_items, seed)
    out = Path("/tmp/kd-bench-student")
    cfg = TrainConfig(
        out=str(out),
        max_pairs=cfg0.max_pairs,
        english_rows=cfg0.english_rows,
        eval_pairs=0,
        epochs=1,
        batch_size=batch_size,
        seed=seed,
        checkpoint_every=0,
    )
    timings = {}
    result = distill(cfg, status=lambda s: timings.setdefault(s.split()[0], time.perf_counter()))
    train_s = result.metrics["train_seconds"] + result.metrics.get("prepare_seconds", 0.0)
    student = Encoder.load(str(out))
    teacher = Encoder.load(cfg.teacher)
    conn.send(
        {
            "name": "kd",
            "items": len(data.texts),
            "train_s": train_s,
            "peak_rss_gb": _peak_rss_gb(),
            **_score(student, teacher, eval_pairs),
        }
    )


def run_st(conn, n_items: int, batch_size: int, eval_pairs: int, seed: int) -> None:
    warnings.simplefilter("ignore")
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )

    from kd.models.encoder import (
        Encoder,
        pick_device,
        prepare_torch,
        quiet_transformers,
        resolve_model,
    )
    from kd.train.run import teacher_vectors

    quiet_transformers()
    prepare_torch("cpu")
    cfg, data = _items(n_items, seed)
    teacher = Encoder.load(cfg.teacher)
    tvec = teacher_vectors(teacher, data.english)
    student = SentenceTransformer(resolve_model(cfg.student), device=pick_device("auto"))
    student.max_seq_length = cfg.max_seq_length
    ds = Dataset.from_dict({"text": data.texts, "label": tvec[data.target].tolist()})
    args = SentenceTransformerTrainingArguments(
        output_dir="/tmp/st-bench",
        num_train_epochs=1,
        per_device_train_batch_size=batch_size,
        learning_rate=cfg.lr,
        warmup_ratio=cfg.warmup,
        seed=seed,
        report_to="none",
        save_strategy="no",
        logging_steps=10**9,
        dataloader_num_workers=0,
    )
    trainer = SentenceTransformerTrainer(
        model=student, args=args, train_dataset=ds, loss=losses.MSELoss(student)
    )
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    student.save("/tmp/st-bench-student")
    conn.send(
        {
            "name": "sentence-transformers",
            "items": len(data.texts),
            "train_s": train_s,
            "peak_rss_gb": _peak_rss_gb(),
            **_score(Encoder.load("/tmp/st-bench-student"), teacher, eval_pairs),
        }
    )


def _score(student, teacher, eval_pairs: int) -> dict:
    from kd.evaluate.metrics import evaluate

    sets = _eval_sets(eval_pairs)
    if sets is None:
        return {"eval": "skipped: ../shared/data/tatoeba-dev is absent"}
    teacher_en = {k: teacher.encode(en) for k, (en, _x) in sets.items()}
    mean = evaluate(sets, teacher_en, student.encode)["mean"]
    return {
        k: mean[k]
        for k in ("cross_mean_accuracy", "student_mean_accuracy", "english_fidelity")
        if k in mean
    }


def encode_race(n: int, batch_size: int) -> tuple[float, float]:
    """Sentences/second of kd's encoder and of SentenceTransformer.encode, same inputs."""
    from sentence_transformers import SentenceTransformer

    from kd.data.english_text import english_sentences
    from kd.models.encoder import DEFAULT_STUDENT, Encoder, prepare_torch, resolve_model

    prepare_torch("cpu")
    texts = english_sentences(n, seed=1)
    st = SentenceTransformer(resolve_model(DEFAULT_STUDENT), device="cpu")
    mine = Encoder(DEFAULT_STUDENT, st)
    st.encode(texts[:64], batch_size=batch_size)  # warm both paths
    mine.encode(texts[:64], batch_size=batch_size)
    rates = {"kd": [], "st": []}
    for _ in range(2):  # interleaved, best of two: shared machines are noisy
        t = time.perf_counter()
        a = mine.encode(texts, batch_size=batch_size)
        rates["kd"].append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        b = st.encode(texts, batch_size=batch_size)
        rates["st"].append(n / (time.perf_counter() - t))
    assert np.allclose(a, b, atol=1e-4), "kd and sentence-transformers disagree on the vectors"
    return max(rates["kd"]), max(rates["st"])


def _in_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1200, help="training items (texts)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-pairs", type=int, default=200, help="Tatoeba pairs per language")
    ap.add_argument("--encode-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-st", action="store_true", help="only run kd (for a quick check)")
    args = ap.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {device}, torch threads: {torch.get_num_threads()}", flush=True)
    runs = [_in_process(run_kd, args.items, args.batch_size, args.eval_pairs, args.seed)]
    if not args.skip_st:
        runs.append(_in_process(run_st, args.items, args.batch_size, args.eval_pairs, args.seed))
    for r in runs:
        r["items_per_s"] = r["items"] / r["train_s"]
        print(json.dumps(r), flush=True)
    kd_rate, st_rate = encode_race(args.encode_n, 64)
    print(f"encode sentences/s: kd {kd_rate:.1f}, sentence-transformers {st_rate:.1f}")
    train_speedup = (
        runs[0]["items_per_s"] / runs[1]["items_per_s"] if len(runs) > 1 else float("nan")
    )
    print(f"train_speedup={train_speedup:.2f} encode_speedup={kd_rate / st_rate:.2f}")


if __name__ == "__main__":
    main()
