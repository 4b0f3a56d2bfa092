"""The one prepared check for a machine with a GPU: environment, throughput against
sentence-transformers' trainer, and a fixed-length run of the GPU recipe, into one JSON file.

Run: ``python bench/gpu_check.py --out gpu_check.json`` (or ``bash bench/gpu_check.sh``) on the
GPU machine; ``--dry-run`` runs every section on the CPU with tiny random models, synthetic
pairs and a few steps (what CI does, in well under a minute), so the script is known to run to
the end before GPU time is spent on it. The last line printed is ``gpu_check=PATH``.

The JSON (``schema`` 1) holds:

- ``schema``, ``dry_run``, ``started``, ``total_seconds``;
- ``environment``: ``python``, ``torch``, ``transformers``, ``sentence_transformers``,
  ``cuda_available``, ``cuda_version``, ``devices`` (``name``, ``capability``,
  ``memory_gib`` each), ``bf16_supported``, ``nccl_available``, ``gloo_available``,
  ``cpu_count``, ``device`` (what the runs below used);
- ``models``: the ``teacher`` and ``student`` used, ``data`` (where the pairs came from) and
  ``dev_set`` (what the recipe run is scored on);
- ``throughput``: the same training items and models through ``kd`` (``kd.train.run.distill``,
  whole student, batch ``batch_size``, ``steps`` steps) and ``SentenceTransformerTrainer``
  with ``losses.MSELoss`` (the same number of steps and batch size, bf16 on CUDA): for each,
  ``items_per_s``, ``train_seconds``, ``steps``, ``peak_gpu_gib`` (``null`` on the CPU); then
  ``speedup`` = kd's items/s over sentence-transformers'. A section that cannot run holds
  ``skipped`` with the reason instead;
- ``recipe``: ``kd distill --preset gpu`` (:data:`kd.config.PRESETS`) capped at ``max_steps``:
  ``steps``, ``train_seconds``, ``items_per_s``, ``peak_gpu_gib``, ``peak_rss_gb``, and
  ``dev`` with ``cross_mean_accuracy``, ``student_mean_accuracy``, ``english_fidelity``,
  ``mse_x100`` (the mean over languages, :func:`kd.evaluate.metrics.evaluate`) for the ``untrained``
  and the ``distilled`` student.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
SCHEMA = 1


def environment(device: str) -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "devices": [],
        "bf16_supported": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        "nccl_available": bool(torch.distributed.is_nccl_available()),
        "gloo_available": bool(torch.distributed.is_gloo_available()),
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    for name in ("transformers", "sentence_transformers"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        env["devices"].append(
            {
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 1024**3, 1),
            }
        )
    return env


def _peak_gpu_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 1024**3, 3)


def _reset_gpu_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _synthetic_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` distinct English/French pairs in the tiny models' vocabulary (dry run)."""
    import random

    from tests.conftest import WORDS

    en_words, fr_words = WORDS[:17], WORDS[17:30]
    rng = random.Random(seed)
    lines: dict[str, None] = {}
    while len(lines) < n:
        k = rng.randint(3, 8)
        en = " ".join(rng.choice(en_words) for _ in range(k))
        fr = " ".join(rng.choice(fr_words) for _ in range(k))
        lines[f"{en}\t{fr}"] = None
    path.write_text("en\tfr\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def setup(args, work: Path) -> dict:
    """Models, data and dev set: tiny and synthetic in a dry run, the defaults otherwise."""
    from kd.models.registry import DEFAULT_STUDENT, DEFAULT_TEACHER

    if args.dry_run:
        from tests.conftest import _build_tiny_bert

        return {
            "teacher": str(_build_tiny_bert(work / "teacher", seed=0)),
            "student": str(_build_tiny_bert(work / "student", seed=1)),
            "data": [str(_synthetic_pairs(work / "fr.tsv", 400))],
            "langs": ["fr"],
            "dev_set": "held-out synthetic pairs",
            "tatoeba": None,
        }
    everyday = Path(os.environ.get("KD_DATA") or SHARED / "everyday-parallel")
    tatoeba = Path(os.environ.get("KD_TATOEBA") or SHARED / "tatoeba-dev")
    data = [str(everyday)] if everyday.is_dir() else []  # else kd's default source
    return {
        "teacher": args.teacher or DEFAULT_TEACHER,
        "student": args.student or DEFAULT_STUDENT,
        "data": data,
        "langs": None,
        "dev_set": str(tatoeba) if tatoeba.is_dir() else "held-out pairs of the training data",
        "tatoeba": str(tatoeba) if tatoeba.is_dir() else None,
    }


def _base_config(s: dict, args, work: Path, **kw):
    from kd.config import TrainConfig

    base = {
        "out": str(work / "kd-student"),
        "teacher": s["teacher"],
        "student": s["student"],
        "data": s["data"],
        "max_pairs": args.pairs,
        "english_rows": 0 if args.dry_run else args.pairs,
        "eval_pairs": 0,
        "epochs": 1,
        "checkpoint_every": 0,
        "device": args.device,
    }
    if s["langs"]:
        base["langs"] = s["langs"]
    return TrainConfig(**(base | kw))


def throughput(s: dict, args, work: Path) -> dict:
    """kd and SentenceTransformerTrainer on the same items, models, batch size and steps."""
    import torch

    from kd.data.dataset import read_dataset
    from kd.models.encoder import Encoder, pick_device
    from kd.train.run import distill, teacher_vectors

    device = pick_device(args.device)
    cfg = _base_config(
        s,
        args,
        work,
        freeze_layers=0,
        batch_size=args.batch_size,
        max_steps=args.steps,
        precision="bf16" if device == "cuda" else "fp32",
    )
    _reset_gpu_peak()
    result = distill(cfg)
    kd_run = {
        "steps": result.steps,
        "train_seconds": round(result.metrics["train_seconds"], 3),
        "items_per_s": round(result.steps * cfg.batch_size / result.metrics["train_seconds"], 1),
        "peak_gpu_gib": _peak_gpu_gib(),
    }
    out = {"batch_size": cfg.batch_size, "kd": kd_run}
    try:
        from datasets import Dataset
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
            losses,
        )
    except ImportError as err:
        out["sentence_transformers"] = {"skipped": f"cannot import its trainer: {err}"}
        return out
    from kd.models.encoder import resolve_model

    data = read_dataset(cfg)
    teacher = Encoder.load(cfg.teacher, device)
    labels = teacher_vectors(teacher, data.english)[data.target]
    del teacher
    student = SentenceTransformer(resolve_model(cfg.student), device=device)
    student.max_seq_length = cfg.max_seq_length
    ds = Dataset.from_dict({"text": data.texts, "label": labels.tolist()})
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(work / "st-out"),
        max_steps=result.steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        warmup_ratio=cfg.warmup,
        bf16=device == "cuda",
        seed=cfg.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=10**9,
        dataloader_num_workers=0,
        use_cpu=device != "cuda",
    )
    trainer = SentenceTransformerTrainer(
        model=student, args=targs, train_dataset=ds, loss=losses.MSELoss(student)
    )
    _reset_gpu_peak()
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    out["sentence_transformers"] = {
        "steps": result.steps,
        "train_seconds": round(seconds, 3),
        "items_per_s": round(result.steps * cfg.batch_size / seconds, 1),
        "peak_gpu_gib": _peak_gpu_gib(),
    }
    out["speedup"] = round(kd_run["items_per_s"] / out["sentence_transformers"]["items_per_s"], 3)
    del trainer, student
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def recipe(s: dict, args, work: Path) -> dict:
    """``--preset gpu`` for ``--recipe-steps`` steps, scored on the dev set before and after."""
    from kd.config import PRESETS
    from kd.train.run import distill

    preset = dict(PRESETS["gpu"])
    if args.dry_run:  # tiny models on the CPU: the recipe's shape, small sizes
        preset |= {"batch_size": 16, "precision": "fp32", "lr": 1e-3}
    cfg = _base_config(
        s,
        args,
        work,
        **(
            preset
            | {
                "out": str(work / "recipe-student"),
                "max_pairs": args.pairs,
                "max_steps": args.recipe_steps,
                "eval_pairs": 0 if s["tatoeba"] else 50,
                "evals": 0,
                "checkpoint_every": 0,
                "english_rows": 0 if args.dry_run else preset["english_rows"],
            }
        ),
    )
    _reset_gpu_peak()
    result = distill(cfg)
    m = result.metrics
    run = {
        "preset": "gpu",
        "steps": result.steps,
        "batch_size": cfg.batch_size,
        "train_seconds": round(m["train_seconds"], 3),
        "items_per_s": round(result.steps * cfg.batch_size / m["train_seconds"], 1),
        "peak_gpu_gib": _peak_gpu_gib(),
        "peak_rss_gb": round(m["peak_rss_gb"], 3),
    }
    keys = ("cross_mean_accuracy", "student_mean_accuracy", "english_fidelity", "mse_x100")
    if s["tatoeba"]:
        from kd.data.dataset import tatoeba_sets
        from kd.evaluate.metrics import evaluate
        from kd.models.encoder import Encoder, pick_device

        device = pick_device(args.device)
        sets = tatoeba_sets(s["tatoeba"], None, args.dev_pairs)
        teacher = Encoder.load(cfg.teacher, device)
        teacher_en = {lang: teacher.encode(en) for lang, (en, _x) in sets.items()}
        dev = {}
        for name, model in (("untrained", cfg.student), ("distilled", cfg.out)):
            mean = evaluate(sets, teacher_en, Encoder.load(model, device).encode)["mean"]
            dev[name] = {k: round(mean[k], 4) for k in keys if k in mean}
    else:
        sources = {"untrained": "student_untrained", "distilled": "student_distilled"}
        dev = {
            name: {k: round(m[src]["mean"][k], 4) for k in keys if k in m[src]["mean"]}
            for name, src in sources.items()
            if src in m
        }
    run["dev"] = dev
    return run


def _section(report: dict, name: str, fn, *args) -> None:
    started = time.perf_counter()
    try:
        report[name] = fn(*args)
    except Exception as err:  # one section failing must not lose the others' figures
        report[name] = {"skipped": f"{type(err).__name__}: {str(err)[:300]}"}
        traceback.print_exc()
    report[name]["seconds"] = round(time.perf_counter() - started, 2)
    print(f"gpu_check: {name} done in {report[name]['seconds']} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json", help="the JSON file to write")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny models, a few steps")
    ap.add_argument("--device", default=None, help="auto, cpu or cuda (dry run: cpu)")
    ap.add_argument("--teacher", default=None)
    ap.add_argument("--student", default=None)
    ap.add_argument("--pairs", type=int, default=None, help="pairs per language")
    ap.add_argument("--batch-size", type=int, default=None, help="throughput batch size")
    ap.add_argument("--steps", type=int, default=None, help="throughput steps per trainer")
    ap.add_argument("--recipe-steps", type=int, default=None, help="steps of the recipe run")
    ap.add_argument("--dev-pairs", type=int, default=500, help="Tatoeba pairs a language")
    args = ap.parse_args(argv)
    small = args.dry_run
    defaults = {
        "device": "cpu" if small else "auto",
        "pairs": 200 if small else 2000,
        "batch_size": 16 if small else 128,
        "steps": 6 if small else 100,
        "recipe_steps": 8 if small else 600,
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    warnings.simplefilter("ignore")
    from kd.models.encoder import pick_device, quiet_transformers

    quiet_transformers()
    started = time.perf_counter()
    report: dict = {
        "schema": SCHEMA,
        "dry_run": args.dry_run,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report["environment"] = environment(pick_device(args.device))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        if small:  # tiny models: a throw-away cache, unless the caller chose one
            os.environ.setdefault("KD_CACHE", str(work / "cache"))
        s = setup(args, work)
        report["models"] = {k: s[k] for k in ("teacher", "student", "data", "dev_set")}
        _section(report, "throughput", throughput, s, args, work)
        _section(report, "recipe", recipe, s, args, work)
    report["total_seconds"] = round(time.perf_counter() - started, 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"gpu_check={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
