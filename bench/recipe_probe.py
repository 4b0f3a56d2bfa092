"""Compare training recipes fast: frozen layers cached on disk once, then only the top trains.

A full ``kd distill`` spends much of its time computing the student's frozen bottom layers. For
a sweep over learning rates, epochs or data mixes those outputs are the same in every run, so
this script computes them once for the run's training items and for the Tatoeba dev set, saves
them under ``kd.io.cache_dir("probe")``, and then trains only the top layers and the head,
scoring the dev set during training: cross-model accuracy student(x) -> teacher(en),
student-vs-student accuracy and English fidelity, averaged over the 12 dev languages (the
numbers ``kd eval`` reports), and the worst language's cross-model accuracy.

It builds its data with ``kd.data.dataset.read_dataset`` (so ``KD_DATA`` picks the everyday set, as
in ``kd distill``) and trains through ``kd distill``'s own loop (:func:`kd.train.loop.train_loop`):
the same ridge head, loss, ranking term, batches, warm-up and linear decay, gradient clipping
and compute precision. It skips the held-out evaluation, checkpoints and saving, and fits the
head on every item it trains on (``kd distill`` on a sample of at most 30,000). Its numbers
guide the choice of a recipe; the default-run table in docs/results.md comes from
``kd distill`` and ``kd eval`` themselves.

Run: ``KD_DATA=../shared/data/everyday-parallel python bench/recipe_probe.py [--epochs 2]
[--lr 1e-4] [--freeze-layers 9] [--english-rows 12000] [--max-pairs 1000] [--evals 2]
[--rank-weight 1] [--english-only] [--pair-weight 3] [--lang-weight ar=3] [--keep-pairs 500]
[--keep-english 6000] [--english FILE] [--data DIR]``; every option not given is
``kd distill``'s default (:class:`kd.config.TrainConfig`). The last line reads
``cross=<mean> student=<mean> fidelity=<mean> worst=<lang>:<cross>``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TATOEBA = ROOT.parent / "shared" / "data" / "tatoeba-dev"


def _prepare(student, teacher, cfg, precision: str):
    """Frozen-layer states of the training items and of the dev set, computed once, cached."""
    import torch

    from kd.data.dataset import read_dataset
    from kd.data.pairs import read_tatoeba
    from kd.io import cache_dir
    from kd.models.encoder import autocast
    from kd.train.run import teacher_vectors
    from kd.train.student_forward import FrozenPrefixCache

    data = read_dataset(cfg)
    dev = read_tatoeba(TATOEBA)
    dev_texts: list[str] = []
    for pairs in dev.values():
        dev_texts += [p.en for p in pairs] + [p.other for p in pairs]
    digest = hashlib.sha256("\n".join(data.texts + dev_texts).encode()).hexdigest()[:12]
    key = f"{student.fingerprint()}-k{cfg.freeze_layers}-t{cfg.max_seq_length}-{precision}-{digest}"
    path = cache_dir("probe") / f"{key}.pt"
    tvec = teacher_vectors(teacher, data.english, precision=precision)
    dev_teacher = {k: teacher_vectors(teacher, [p.en for p in v]) for k, v in dev.items()}
    if path.exists():
        saved = torch.load(path, weights_only=False)
    else:
        started = time.perf_counter()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        with autocast("cpu", precision):
            k, n = cfg.freeze_layers, cfg.max_seq_length
            train = FrozenPrefixCache(student, data.texts, k, n, dtype=dtype)
            held = FrozenPrefixCache(student, dev_texts, k, n, dtype=dtype)
        saved = {
            "states": train.states,
            "offsets": train.offsets,
            "dev_states": held.states,
            "dev_offsets": held.offsets,
        }
        torch.save(saved, path)
        took = time.perf_counter() - started
        print(f"cached {len(data.texts)} items and the dev set in {took:.0f} s", flush=True)
    return saved | {
        "target": data.target,
        "langs": data.langs,
        "teacher": tvec,
        "dev_langs": list(dev),
        "dev_sizes": [len(v) for v in dev.values()],
        "dev_teacher": dev_teacher,
    }


def _dev_scores(student, dev, z, precision: str) -> dict[str, float | str]:
    from kd.evaluate.metrics import mean_over_langs, pair_metrics
    from kd.models.encoder import autocast
    from kd.train.student_forward import embed_in_batches

    was = student.training
    student.eval()
    with autocast("cpu", precision):
        vecs = embed_in_batches(dev, np.arange(len(dev.offsets) - 1), 256)
    student.train(was)
    per_lang, pos = {}, 0
    for lang, n in zip(z["dev_langs"], z["dev_sizes"], strict=True):
        en, x = vecs[pos : pos + n], vecs[pos + n : pos + 2 * n]
        per_lang[lang] = pair_metrics(z["dev_teacher"][lang], en, x)
        pos += 2 * n
    m = mean_over_langs(per_lang)
    worst = min(per_lang, key=lambda lang: per_lang[lang]["cross_mean_accuracy"])
    return {
        "cross": m["cross_mean_accuracy"],
        "student": m["student_mean_accuracy"],
        "fidelity": m["english_fidelity"],
        "worst": f"{worst}:{per_lang[worst]['cross_mean_accuracy']:.3f}",
    }


def _subsample(
    items: np.ndarray, langs: np.ndarray, target: np.ndarray, pairs: int, english: int, seed: int
) -> np.ndarray:
    """``items`` cut to ``pairs`` translations a language and ``english`` English-only rows.

    English items are their own targets (``target[i] == i``); an English item that a kept
    translation points to stays, the other English items are the English-only rows.
    0 pairs and -1 rows keep everything of that kind.
    """
    rng = np.random.default_rng(seed)
    english_items = items[langs[items] == "en"]
    kept = [english_items]
    for lang in sorted(set(langs[items]) - {"en"}):
        of_lang = items[langs[items] == lang]
        if pairs and len(of_lang) > pairs:
            of_lang = np.sort(rng.choice(of_lang, pairs, replace=False))
        kept.append(of_lang)
    translations = np.concatenate(kept[1:]) if len(kept) > 1 else items[:0]
    if english >= 0 or pairs:
        sides = np.isin(english_items, target[translations])
        rows = english_items[~sides]
        if english >= 0 and len(rows) > english:
            rows = np.sort(rng.choice(rows, english, replace=False))
        kept[0] = np.sort(np.concatenate([english_items[sides], rows]))
    return np.concatenate(kept)


def _line(scores: dict[str, float | str]) -> str:
    return " ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from kd.config import TrainConfig

    d = TrainConfig(out="/tmp/unused")  # the defaults of `kd distill`: one owner
    parser.add_argument("--freeze-layers", type=int, default=d.freeze_layers)
    parser.add_argument("--english-rows", type=int, default=d.english_rows)
    parser.add_argument(
        "--english",
        action="append",
        default=None,
        metavar="SOURCE",
        help="English-only rows, as `kd distill --english` (repeatable; "
        "default: WordNet and fortunes)",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=None,
        metavar="SOURCE",
        help="parallel data, as `kd distill --data` (repeatable; default: KD_DATA or "
        "kd distill's default source)",
    )
    parser.add_argument("--max-pairs", type=int, default=d.max_pairs)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--head-lr", type=float, default=d.head_lr)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--evals", type=int, default=1, help="dev evaluations per epoch")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument(
        "--rank-weight",
        type=float,
        default=d.rank_weight,
        help="weight of the ranking term (kd.train.losses)",
    )
    parser.add_argument(
        "--temperature", type=float, default=d.temperature, help="of the ranking term"
    )
    parser.add_argument("--english-only", action="store_true", help="drop the translations")
    parser.add_argument(
        "--pair-weight", type=int, default=1, help="repeat each translation N times"
    )
    parser.add_argument(
        "--lang-weight",
        action="append",
        default=[],
        metavar="LANG=N",
        help="repeat the translations of LANG N times (repeatable)",
    )
    parser.add_argument(
        "--keep-pairs",
        type=int,
        default=0,
        help="train on a seeded sample of N of the cached translations per language "
        "(no new cache: a data-size sweep over one cached run)",
    )
    parser.add_argument(
        "--keep-english",
        type=int,
        default=-1,
        help="keep a seeded sample of N of the English-only rows (the English sides of "
        "the kept translations always stay)",
    )
    args = parser.parse_args()
    if not TATOEBA.is_dir():
        sys.exit(f"recipe_probe: needs the Tatoeba dev set at {TATOEBA}")

    warnings.simplefilter("ignore")
    import torch

    from kd.models.encoder import (
        Encoder,
        autocast,
        prepare_torch,
        quiet_transformers,
        resolve_precision,
    )
    from kd.train.loop import Hooks, RankBank, train_loop
    from kd.train.run import fit_linear_head, warmup_then_linear_decay
    from kd.train.student_forward import FrozenPrefixCache, embed_in_batches, trainable_parameters

    quiet_transformers()
    prepare_torch("cpu")
    torch.manual_seed(0)
    precision = resolve_precision(args.precision, "cpu")
    cfg = TrainConfig(
        out="/tmp/unused",
        english_rows=args.english_rows,
        english=args.english or d.english,
        data=args.data or d.data,
        max_pairs=args.max_pairs,
        freeze_layers=args.freeze_layers,
        lr=args.lr,
        head_lr=args.head_lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        rank_weight=args.rank_weight,
        temperature=args.temperature,
    )
    student = Encoder.load(cfg.student)
    teacher = Encoder.load(cfg.teacher)
    student.max_seq_length = min(student.max_seq_length, cfg.max_seq_length)
    teacher.max_seq_length = min(teacher.max_seq_length, cfg.max_seq_length * 2)
    params = trainable_parameters(student, cfg.freeze_layers)
    z = _prepare(student, teacher, cfg, precision)
    del teacher
    train = FrozenPrefixCache.from_states(student, cfg.freeze_layers, z["states"], z["offsets"])
    dev = FrozenPrefixCache.from_states(
        student, cfg.freeze_layers, z["dev_states"], z["dev_offsets"]
    )
    target, langs = z["target"], np.array(z["langs"])
    items = np.arange(len(target))
    if args.english_only:
        items = items[langs == "en"]
    items = _subsample(items, langs, target, args.keep_pairs, args.keep_english, cfg.seed)
    translations = items[langs[items] != "en"]
    repeats = [translations] * (args.pair_weight - 1)
    for spec in args.lang_weight:
        lang, _, times = spec.partition("=")
        repeats += [translations[langs[translations] == lang]] * (int(times) - 1)
    items = np.concatenate([items] + repeats)
    print(f"{len(items)} items ({(langs[items] == 'en').sum()} English), {precision}", flush=True)

    student.head, student.normalize = None, False
    print("untrained", _line(_dev_scores(student, dev, z, precision)), flush=True)
    distinct = np.unique(items)
    with autocast("cpu", precision):
        pooled = embed_in_batches(train, distinct, 256)
    student.head = fit_linear_head(pooled, z["teacher"][target[distinct]])
    student.normalize = True
    print("ridge head", _line(_dev_scores(student, dev, z, precision)), flush=True)

    head = list(student.head.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    # The loop of `kd distill` (kd.train.loop), over the chosen items (repeats included): item j of
    # this feed is cached item items[j].
    feed = _Selection(items, target, z["teacher"])
    per_epoch = cfg.steps_per_epoch(len(items))
    total = per_epoch * cfg.epochs
    cfg.eval_every = max(1, per_epoch // max(1, args.evals))
    schedule = warmup_then_linear_decay(optimizer, total, cfg.warmup)
    started, losses = time.perf_counter(), []

    def on_step(step: int, record: dict) -> None:
        losses.append(record["loss"])
        if "scores" in record:
            took = time.perf_counter() - started
            mean = np.mean(losses[-cfg.eval_every :])
            print(
                f"step {step}/{total} ({took:.0f} s) loss {mean:.3f}", record["scores"], flush=True
            )

    student.train()
    train_loop(
        lambda j: train.embed(items[j]),
        feed,
        train.lengths()[items],
        cfg,
        optimizer,
        schedule,
        params + head,
        precision,
        total,
        bank=RankBank.of(feed, cfg.seed) if cfg.rank_weight else None,
        hooks=Hooks(
            evaluate=lambda step: {"scores": _line(_dev_scores(student, dev, z, precision))},
            on_step=on_step,
        ),
    )
    scores = _dev_scores(student, dev, z, precision)
    took = time.perf_counter() - started
    print(f"step {total}/{total} ({took:.0f} s) loss {np.mean(losses[-cfg.eval_every :]):.3f}")
    print(_line(scores))


class _Selection:
    """The chosen items of the probe as a :class:`kd.train.loop.Feed`: item j is cached item
    items[j]."""

    def __init__(self, items: np.ndarray, target: np.ndarray, teacher: np.ndarray) -> None:
        self.items, self._target, self._teacher = items, target, teacher
        self.n_items, self.n_english = len(items), len(teacher)

    def target(self, idx: np.ndarray) -> np.ndarray:
        return self._target[self.items[idx]]

    def teacher(self, ids: np.ndarray) -> np.ndarray:
        return self._teacher[ids]


if __name__ == "__main__":
    main()
