"""A static student beside the transformer student it was made from: quality, speed, size.

For each static folder (``--static DIR``, repeatable: made by ``kd export --static``) and the
student (the pre-built one, or ``--student``), on the dev sets:

- ``cross``: Tatoeba dev cross-model retrieval into the teacher's space (a translation embedded
  by the model finds its English sentence embedded by the teacher), mean over the 12 dev
  languages, ``--pairs`` a language (0: all);
- ``STS x``: STS benchmark dev, sentence 1 in English embedded by the teacher, sentence 2 in
  another language by the model, Spearman x 100, mean over the languages besides English;
- ``sent/s``: sentences a second, each model through plain ``SentenceTransformer.encode`` on the
  same ``--sentences`` Tatoeba sentences, best of ``--rounds``; ``x student``: over the student's;
- ``MiB``: the folder's size on disk (the student's: its full sentence-transformers folder).

``--student-scores`` skips the student's quality passes (the slow part on two cores) and prints
the scores its folder's ``eval_tatoeba.json`` records from ``kd eval`` on the same dev sets.

Run: ``python bench/static_student.py --static DIR [--static DIR2] [--student-scores]``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
TATOEBA = SHARED / "tatoeba-dev"
STS = SHARED / "stsb-multi-dev"


def _size(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def _speed(encode, texts: list[str], rounds: int) -> float:
    encode(texts[:32])  # warm-up
    best = math.inf
    for _ in range(rounds):
        started = time.perf_counter()
        encode(texts)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def _recorded(student: Path) -> dict:
    """The student's scores from its eval_tatoeba.json (kd eval --json), where it has one."""
    try:
        report = json.loads((student / "eval_tatoeba.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out = {}
    with_baseline = report.get("results", {}).get("student_distilled")
    if with_baseline:
        out["cross"] = with_baseline["mean"].get("cross_mean_accuracy", math.nan)
    sts = report.get("sts", {}).get("student_distilled", {}).get("mean", {})
    if "cross" in sts:
        out["sts_cross"] = sts["cross"]
    return out


def main() -> int:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--static", action="append", required=True, help="a static folder")
    parser.add_argument("--student", default=str(ROOT / "assets" / "prebuilt-student"))
    parser.add_argument("--teacher", default=None, help="default: the student's run's teacher")
    parser.add_argument("--pairs", type=int, default=0, help="Tatoeba pairs a language (0: all)")
    parser.add_argument("--sts-pairs", type=int, default=0, help="STS pairs a language (0: all)")
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--student-scores", action="store_true")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from kd.data.dataset import tatoeba_sets
    from kd.evaluate.metrics import evaluate
    from kd.evaluate.sts import cached_encode, read_sts, sts_report
    from kd.langs import DEV_LANGS
    from kd.models.encoder import DEFAULT_TEACHER, Encoder, quiet_transformers
    from kd.models.fast import cpu_name
    from kd.models.static import load_encoder

    quiet_transformers()
    if not TATOEBA.is_dir():
        print(f"no dev sets at {TATOEBA}; this bench needs ../shared/data")
        return 1
    student_dir = Path(args.student)
    run = {}
    if (student_dir / "kd_config.json").is_file():
        run = json.loads((student_dir / "kd_config.json").read_text(encoding="utf-8"))
    teacher = Encoder.load(args.teacher or run.get("teacher") or DEFAULT_TEACHER)
    sets = tatoeba_sets(TATOEBA, list(DEV_LANGS), args.pairs)
    sts_sets = read_sts(STS, max_rows=args.sts_pairs) if STS.is_dir() else {}
    teacher_en = {lang: teacher.encode(en) for lang, (en, _x) in sets.items()}
    teacher_sts = cached_encode(teacher.encode)
    texts = [s for _lang, (en, xx) in sets.items() for s in (xx[:20] + en[:20])][: args.sentences]
    print(
        f"machine: {cpu_name()}; {len(texts)} sentences timed; Tatoeba dev: "
        f"{sum(len(v[0]) for v in sets.values())} pairs; STS pairs a language: "
        f"{sts_sets and len(next(iter(sts_sets.values())).scores)}"
    )

    rows: dict[str, dict] = {}

    def quality(name: str, encode) -> dict:
        out = {"cross": evaluate(sets, teacher_en, encode)["mean"].get("cross_mean_accuracy")}
        if sts_sets:
            report = sts_report(sts_sets, teacher_sts, {name: encode})
            out["sts_cross"] = report[name]["mean"].get("cross", math.nan)
        return out

    # The student: its full folder (a delta is rebuilt and saved once), through plain ST.
    student = Encoder.load(str(student_dir))
    folder = Path(tempfile.mkdtemp(prefix="kd-static-bench-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    plain = SentenceTransformer(str(student.save(folder / "student")), device="cpu")
    rows["student"] = {
        "sps": _speed(lambda t, m=plain: m.encode(t, batch_size=64), texts, args.rounds),
        "mib": _size(folder / "student"),
    }
    if args.student_scores:
        rows["student"].update(_recorded(student_dir))
        rows["student"]["note"] = "scores from its eval_tatoeba.json"
    else:
        rows["student"].update(quality("student", student.encode))
    student = plain = None  # the transformer leaves memory before the static ones load
    for static_dir in args.static:
        static = load_encoder(static_dir)
        st = SentenceTransformer(static_dir, device="cpu")
        try:
            sps = _speed(lambda t, m=st: m.encode(t, batch_size=64), texts, args.rounds)
            note = ""
        except RuntimeError as err:  # e.g. a kernel missing for an fp16 table: kd's loader
            sps = _speed(static.encode, texts, args.rounds)  # computes in float32
            note = f"plain ST failed ({str(err)[:60]}); timed through kd"
        rows[static_dir] = {
            "sps": sps,
            "mib": _size(Path(static_dir)),
            "note": note,
            **quality(static_dir, static.encode),
        }
    base = rows["student"]["sps"]
    print(f"\n{'model':<44} {'cross':>6} {'STS x':>6} {'sent/s':>9} {'x student':>9} {'MiB':>7}")
    for name, r in rows.items():
        print(
            f"{name[-44:]:<44} {r.get('cross', math.nan):6.3f} {r.get('sts_cross', math.nan):6.1f} "
            f"{r['sps']:9.1f} {r['sps'] / base:9.1f} {r['mib']:7.1f}  {r.get('note', '')}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
