"""Cross-lingual search through kd's index: English indexed by the teacher, queried in 12 languages.

Run: ``python bench/cross_lingual_search.py --student /tmp/kdrun/student`` (about 5-8 minutes
on 2 CPU cores; the student is a folder written by ``kd distill``).

The English side of the Tatoeba development set (12 languages x 500 pairs, 5,671 distinct
English sentences) goes into one index built by the teacher. Each non-English sentence is a
query; a hit is correct when it is the English sentence it translates. Reported per language:
recall@1 and recall@10 (the share of queries whose translation is ranked first / in the top 10)
for

- ``distilled``: the distilled student querying the teacher's index (the store allows it: the
  student was distilled from that teacher), default search mode;
- ``distilled exact``: the same with ``exact=True``, to show what the sign-bit shortcut costs;
- ``untrained``: the student before distillation against the same teacher vectors, scored with
  numpy, since the store refuses it (another model's space): what distillation buys;
- ``untrained own``: the untrained student searching an index it built itself from the English
  side (multilingual-e5 is multilingual already): the alternative of not distilling at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kd.search.store import Row, VectorStore  # noqa: E402

TATOEBA = ROOT.parent / "shared" / "data" / "tatoeba-dev"


def build(db: Path, model, english: list[str]) -> tuple[VectorStore, np.ndarray]:
    """An index of the English sentences made by ``model``; also returns their vectors."""
    from kd.search.index import model_stamp

    vectors = model.encode(english)
    store = VectorStore.create(db, model_stamp(model))
    rows = [Row(text, "en", "tatoeba-dev") for text in english]
    for i in range(0, len(rows), 512):
        store.add(rows[i : i + 512], vectors[i : i + 512])
    store.close()
    return VectorStore.open(db, model_stamp(model)), vectors


def recall_from_store(store: VectorStore, queries: np.ndarray, gold: list[str], exact=False):
    hits = store.search(queries, k=10, exact=exact)
    texts = [[h.text for h in row] for row in hits]
    at1 = np.mean([row[:1] == [g] for row, g in zip(texts, gold, strict=True)])
    at10 = np.mean([g in row for row, g in zip(texts, gold, strict=True)])
    return float(at1), float(at10)


def recall_numpy(index: np.ndarray, queries: np.ndarray, gold: list[int]) -> tuple[float, float]:
    scores = queries @ index.T  # (q, n), both sides unit length
    top = np.argsort(-scores, axis=1)[:, :10]
    gold_arr = np.asarray(gold)[:, None]
    return float(np.mean(top[:, 0] == gold_arr[:, 0])), float(np.mean((top == gold_arr).any(1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", required=True, help="distilled student folder (kd distill --out)")
    ap.add_argument("--tatoeba", default=str(TATOEBA))
    ap.add_argument("--baseline", default=None, help="untrained student (default: the run's)")
    ap.add_argument("--skip-own", action="store_true", help="skip the untrained student's index")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from kd.data.pairs import read_tatoeba
    from kd.langs import DEV_LANGS
    from kd.models.encoder import (
        DEFAULT_STUDENT,
        DEFAULT_TEACHER,
        Encoder,
        prepare_torch,
        quiet_transformers,
    )
    from kd.search.index import model_stamp

    quiet_transformers()
    prepare_torch("cpu")
    run = json.loads((Path(args.student) / "kd_config.json").read_text(encoding="utf-8"))
    teacher_id = run.get("teacher", DEFAULT_TEACHER)
    baseline_id = args.baseline or run.get("student", DEFAULT_STUDENT)
    sets = read_tatoeba(args.tatoeba, DEV_LANGS)
    english = sorted({p.en for pairs in sets.values() for p in pairs})
    where = {text: i for i, text in enumerate(english)}
    print(f"{len(english)} distinct English sentences; {sum(map(len, sets.values()))} queries")
    results: dict[str, dict[str, tuple[float, float]]] = {lang: {} for lang in sets}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Encoder.load(teacher_id, "cpu")
        teacher_store, teacher_vecs = build(Path(tmp) / "teacher.db", teacher, english)
        del teacher
        student = Encoder.load(args.student, "cpu")
        with VectorStore.open(teacher_store.path, model_stamp(student)) as store:
            print(f"store: {store.note}")
            for lang, pairs in sets.items():
                q = student.encode([p.other for p in pairs])
                gold = [p.en for p in pairs]
                results[lang]["distilled"] = recall_from_store(store, q, gold)
                results[lang]["distilled exact"] = recall_from_store(store, q, gold, exact=True)
        del student
        base = Encoder.load(baseline_id, "cpu")
        try:
            VectorStore.open(teacher_store.path, model_stamp(base))
        except ValueError as err:
            print(f"store refuses the untrained student, as it should: {err}")
        queries = {lang: base.encode([p.other for p in pairs]) for lang, pairs in sets.items()}
        for lang, pairs in sets.items():
            gold_idx = [where[p.en] for p in pairs]
            results[lang]["untrained"] = recall_numpy(teacher_vecs, queries[lang], gold_idx)
        if not args.skip_own:
            own, _ = build(Path(tmp) / "own.db", base, english)
            for lang, pairs in sets.items():
                gold = [p.en for p in pairs]
                results[lang]["untrained own"] = recall_from_store(own, queries[lang], gold)
            own.close()
        teacher_store.close()
    columns = list(next(iter(results.values())))
    mean = {
        c: tuple(float(np.mean([results[lg][c][i] for lg in results])) for i in (0, 1))
        for c in columns
    }
    print(f"\nteacher {teacher_id}; student {args.student}; untrained {baseline_id}")
    took = time.perf_counter() - started
    print(f"recall@1 / recall@10 over {len(english)} English sentences; took {took:.0f} s")
    print("| lang | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for lang, row in [*results.items(), ("mean", mean)]:
        cells = " | ".join(f"{row[c][0]:.3f} / {row[c][1]:.3f}" for c in columns)
        print(f"| {lang} | {cells} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "mean": mean}, indent=2))
    print(
        f"recall1_distilled={mean['distilled'][0]:.3f} "
        f"recall10_distilled={mean['distilled'][1]:.3f} "
        f"recall1_untrained={mean['untrained'][0]:.3f}"
    )


if __name__ == "__main__":
    main()
