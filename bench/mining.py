"""Bitext mining on the built test: F1 and xSIM-style error of the untrained and pre-built students.

Run: ``python bench/mining.py --out /tmp/mining.json`` (one model load each; the tests' ~16,000
sentences a model take a few minutes on 2 CPU cores).

The test (:func:`kd.evaluate.mining.build_tests`): per Tatoeba dev language, 200 planted pairs
among 800 foreign distractors (everyday-parallel) and 1,800 English ones (news-english). Each
model is scored under every strategy of :data:`kd.evaluate.mining.STRATEGIES` from one encoding
(the vectors are memoised), at the default threshold, with the oracle threshold beside it.

``--cap``: instead, the cost of one Mine in the app at its cap (``settings.MINE_MAX_LINES``
sentences a list, ``settings.MINE_MAX_CHARS`` characters in all): Tatoeba dev sentences, foreign
against English, through ``webapp.mining.mine_lists`` with the pre-built student loaded first
(as the server holds it), wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from kd.evaluate.mining import STRATEGIES, default_threshold, mining_benchmark  # noqa: E402
from kd.models.encoder import Encoder, pick_device, prepare_torch  # noqa: E402
from kd.models.registry import DEFAULT_STUDENT, prebuilt_dir  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SWEEP = [round(1.0 + 0.005 * i, 3) for i in range(81)]  # 1.000 ... 1.400


def cached_encoder(path: str, device: str, cache: Path):
    """Text -> vectors of one model, kept in ``cache`` (.npz): a rerun scores without
    encoding again, and the model loads only if a sentence is new."""
    memo: dict[str, np.ndarray] = {}
    if cache.exists():
        saved = np.load(cache, allow_pickle=False)
        memo = dict(zip(saved["texts"].tolist(), saved["vectors"], strict=True))
    model = []

    def encode(texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in memo]
        if new:
            if not model:
                model.append(Encoder.load(path, device))
            memo.update(zip(new, model[0].encode(new), strict=True))
            np.savez(cache, texts=np.array(list(memo)), vectors=np.stack(list(memo.values())))
        return np.stack([memo[t] for t in texts])

    return encode


def cap_cost(data: Path) -> None:
    """Wall and CPU seconds of one Mine at the app's cap, the model already loaded."""
    from kd.data.pairs import read_tatoeba
    from webapp import settings
    from webapp.mining import EXAMPLE_SRC, EXAMPLE_TGT, mine_lists, miner_threshold
    from webapp.model_cache import get_encoder
    from webapp.session import Visitor

    pairs = [p for ps in read_tatoeba(data / "tatoeba-dev").values() for p in ps]
    src, tgt, chars = [], [], 0
    for p in pairs:
        if len(src) == settings.MINE_MAX_LINES:
            break
        if chars + len(p.other) + len(p.en) > settings.MINE_MAX_CHARS:
            break
        src.append(p.other)
        tgt.append(p.en)
        chars += len(p.other) + len(p.en)
    gold = set(zip(src, tgt, strict=True))
    tgt = tgt[::-1]
    get_encoder(str(prebuilt_dir()), public=False)
    wall, cpu = time.perf_counter(), time.process_time()
    threshold = miner_threshold("prebuilt")
    lists = "\n".join(src), "\n".join(tgt), None, None
    summary, table = mine_lists(*lists, "prebuilt", threshold, DEFAULT_STUDENT, Visitor())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    right = sum(pair in gold for pair in zip(table["source"], table["target"], strict=True))
    print(
        f"one Mine at the cap: {len(src):,} + {len(tgt):,} sentences, {chars:,} characters: "
        f"{wall:.1f} s wall, {cpu:.1f} s CPU; {len(table)} pairs mined at {threshold}, "
        f"{right} right"
    )
    for which in ("prebuilt", "untrained"):  # the tab's example, as a visitor first sees it
        threshold = miner_threshold(which, DEFAULT_STUDENT)
        summary, table = mine_lists(
            EXAMPLE_SRC, EXAMPLE_TGT, None, None, which, threshold, DEFAULT_STUDENT, Visitor()
        )
        print(f"the example, {which} at {threshold}:")
        print(table.to_string(index=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--models", default=f"{DEFAULT_STUDENT},prebuilt")
    p.add_argument("--langs", default=None, help="comma-separated (default: the 12 dev ones)")
    p.add_argument("--out", default=None, help="write the results as JSON here too")
    p.add_argument("--cache", default="/tmp/kd-mining-vectors", help="folder for the vectors")
    p.add_argument("--cap", action="store_true", help="time one Mine at the app's cap instead")
    args = p.parse_args()
    if args.cap:
        cap_cost(Path(args.data))
        return
    device = pick_device("auto")
    prepare_torch(device)
    langs = args.langs.split(",") if args.langs else None
    report: dict = {}
    for name in args.models.split(","):
        path = str(prebuilt_dir()) if name == "prebuilt" else name
        started = time.perf_counter()
        Path(args.cache).mkdir(parents=True, exist_ok=True)
        cache = Path(args.cache) / f"{name.replace('/', '_')}.npz"
        encode = cached_encoder(path, device, cache)  # one encoding serves every strategy
        threshold = default_threshold(path)
        report[name] = {}
        for strategy in STRATEGIES:
            result = mining_benchmark(
                encode, args.data, langs, strategy=strategy, threshold=threshold, sweep=SWEEP
            )
            report[name][strategy] = result
            m = result["mean"]
            print(
                f"{name:32s} {strategy:12s} at {threshold}: P {m['precision']:.3f} "
                f"R {m['recall']:.3f} F1 {m['f1']:.3f} xSIM err {m['xsim_error']:.3f}; oracle F1 "
                f"{m['oracle_f1']:.3f}; best one threshold {m['sweep_threshold']} F1 "
                f"{m['sweep_f1']:.3f}; leave-one-language-out F1 {m['loo_f1']:.3f}"
                f"  ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        for lang, r in report[name]["max"]["per_lang"].items():
            print(
                f"  {lang}: P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f} "
                f"xSIM err {r['xsim_error']:.3f} oracle F1 {r['oracle_f1']:.3f} "
                f"at {r['oracle_threshold']:.3f}; loo F1 {r['loo_f1']:.3f} at {r['loo_threshold']}",
                flush=True,
            )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
