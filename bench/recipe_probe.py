"""Compare training recipes fast: frozen layers cached on disk once, then only the top trains.

A full ``kd distill`` spends about half its time computing the student's frozen bottom layers.
For a sweep over learning rates, epochs or data mixes those outputs are the same in every run,
so this script computes them once for the run's training items and for the Tatoeba dev set,
saves them under ``kd.io.cache_dir("probe")``, and then trains only the top layers and the
head, scoring the dev set after every epoch: cross-model accuracy student(x) -> teacher(en),
student-vs-student accuracy and English fidelity, averaged over the 12 dev languages, the same
numbers ``kd eval`` reports.

It follows ``kd.train.distill`` step for step (the same items, ridge head, loss, batches,
warm-up and linear decay, gradient clipping); it skips the held-out gettext evaluation,
checkpoints and saving. Its numbers are a guide for choosing a recipe: the README's default-run
table comes from ``kd distill`` and ``kd eval`` themselves.

Run: ``python bench/recipe_probe.py --lr 1e-3 --epochs 4 [--freeze-layers 10]
[--english-rows 16000] [--max-pairs 300] [--english-only] [--pair-weight 3]``. The last line
reads ``cross=<mean> student=<mean> fidelity=<mean>``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TATOEBA = ROOT.parent / "shared" / "data" / "tatoeba-dev"


def _prepare(student, cfg):
    """Frozen-layer states of the training items and of the dev set, computed once, cached."""
    import torch

    from kd.data import read_tatoeba
    from kd.english_text import english_sentences
    from kd.io import cache_dir
    from kd.models import Encoder
    from kd.student_forward import FrozenPrefixCache
    from kd.train import build_dataset, load_pairs, teacher_vectors

    key = f"{student.fingerprint()}-k{cfg.freeze_layers}-r{cfg.english_rows}-p{cfg.max_pairs}"
    key += f"-s{cfg.seed}-t{cfg.max_seq_length}"
    key += "-" + hashlib.sha256(str(TATOEBA.resolve()).encode()).hexdigest()[:8]
    path = cache_dir("probe") / f"{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    started = time.perf_counter()
    teacher = Encoder.load(cfg.teacher)
    data = build_dataset(cfg, load_pairs(cfg), english_sentences(cfg.english_rows, seed=cfg.seed))
    dev = read_tatoeba(TATOEBA)
    dev_texts: list[str] = []
    for pairs in dev.values():
        dev_texts += [p.en for p in pairs] + [p.other for p in pairs]
    train = FrozenPrefixCache(student, data.texts, cfg.freeze_layers, cfg.max_seq_length)
    held = FrozenPrefixCache(student, dev_texts, cfg.freeze_layers, cfg.max_seq_length)
    saved = {
        "states": train.states,
        "offsets": train.offsets,
        "dev_states": held.states,
        "dev_offsets": held.offsets,
        "target": data.target,
        "langs": data.langs,
        "teacher": teacher_vectors(teacher, data.english),
        "dev_langs": list(dev),
        "dev_sizes": [len(v) for v in dev.values()],
        "dev_teacher": {k: teacher_vectors(teacher, [p.en for p in v]) for k, v in dev.items()},
    }
    torch.save(saved, path)
    took = time.perf_counter() - started
    print(f"cached {len(data.texts)} items and the dev set in {took:.0f} s")
    return saved


def _dev_scores(student, dev, z) -> dict[str, float]:
    from kd.evaluate import mean_over_langs, pair_metrics
    from kd.student_forward import embed_in_batches

    was = student.training
    student.eval()
    vecs = embed_in_batches(dev, np.arange(len(dev.offsets) - 1), 256)
    student.train(was)
    per_lang, pos = {}, 0
    for lang, n in zip(z["dev_langs"], z["dev_sizes"], strict=True):
        en, x = vecs[pos : pos + n], vecs[pos + n : pos + 2 * n]
        per_lang[lang] = pair_metrics(z["dev_teacher"][lang], en, x)
        pos += 2 * n
    m = mean_over_langs(per_lang)
    return {
        "cross": m["cross_mean_accuracy"],
        "student": m["student_mean_accuracy"],
        "fidelity": m["english_fidelity"],
    }


def _line(scores: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in scores.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--freeze-layers", type=int, default=10)
    parser.add_argument("--english-rows", type=int, default=16000)
    parser.add_argument("--max-pairs", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--head-lr", type=float, default=None, help="default: --lr")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--english-only", action="store_true", help="drop the translations")
    parser.add_argument(
        "--pair-weight", type=int, default=1, help="repeat each translation N times"
    )
    args = parser.parse_args()
    if not TATOEBA.is_dir():
        sys.exit(f"recipe_probe: needs the Tatoeba dev set at {TATOEBA}")

    warnings.simplefilter("ignore")
    import torch

    from kd.config import TrainConfig
    from kd.losses import mse_loss
    from kd.models import Encoder, prepare_torch, quiet_transformers
    from kd.student_forward import FrozenPrefixCache, embed_in_batches, trainable_parameters
    from kd.train import epoch_batches, fit_linear_head, warmup_then_linear_decay

    quiet_transformers()
    prepare_torch("cpu")
    torch.manual_seed(0)
    cfg = TrainConfig(
        out="/tmp/unused",
        english_rows=args.english_rows,
        max_pairs=args.max_pairs,
        freeze_layers=args.freeze_layers,
    )
    student = Encoder.load(cfg.student)
    student.max_seq_length = min(student.max_seq_length, cfg.max_seq_length)
    params = trainable_parameters(student, cfg.freeze_layers)
    z = _prepare(student, cfg)
    train = FrozenPrefixCache.from_states(student, cfg.freeze_layers, z["states"], z["offsets"])
    dev = FrozenPrefixCache.from_states(
        student, cfg.freeze_layers, z["dev_states"], z["dev_offsets"]
    )
    target, langs = z["target"], np.array(z["langs"])
    items = np.arange(len(target))
    if args.english_only:
        items = items[langs == "en"]
    translations = items[langs[items] != "en"]
    items = np.concatenate([items] + [translations] * (args.pair_weight - 1))

    student.head, student.normalize = None, False
    print("untrained", _line(_dev_scores(student, dev, z)), flush=True)
    distinct = np.unique(items)
    student.head = fit_linear_head(
        embed_in_batches(train, distinct, 256), z["teacher"][target[distinct]]
    )
    student.normalize = True
    print("ridge head", _line(_dev_scores(student, dev, z)), flush=True)

    head = list(student.head.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": args.lr}, {"params": head, "lr": args.head_lr or args.lr}],
        weight_decay=cfg.weight_decay,
    )
    total = math.ceil(len(items) / args.batch_size) * args.epochs
    schedule = warmup_then_linear_decay(optimizer, total, cfg.warmup)
    teacher = torch.from_numpy(z["teacher"])
    target_t = torch.from_numpy(target)
    lengths = train.lengths()[items]
    student.train()
    scores: dict[str, float] = {}
    for epoch in range(args.epochs):
        started, losses = time.perf_counter(), []
        for batch in epoch_batches(lengths, args.batch_size, cfg.seed, epoch):
            idx = items[batch]
            loss = mse_loss(train.embed(idx), teacher[target_t[idx]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params + head, 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        scores = _dev_scores(student, dev, z)
        took = time.perf_counter() - started
        print(f"epoch {epoch + 1} ({took:.0f} s) loss {np.mean(losses):.3f}", _line(scores))
    print(_line(scores))


if __name__ == "__main__":
    main()
