"""The ``kd`` command line: distill, eval, report, embed, export, models, plot, index, search,
mine.

Every user mistake ends in one line on stderr (``kd: error: ...``) and exit status 2; never a
traceback. Long jobs show tqdm progress bars.

Each command imports the modules it runs inside its own function: they load torch (and
``kd plot`` plotly), and ``kd --help``, ``kd models`` and a mistyped option start without them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path

from tqdm import tqdm

from kd.config import (
    DEVICES,
    KINDS,
    PRESETS,
    SAVE_FORMS,
    SETTINGS,
    STATIC_DTYPES,
    STATIC_VOCABS,
    StaticSettings,
    TrainConfig,
    flag,
)
from kd.data.dataset import tatoeba_sets
from kd.evaluate.bias import (
    bias_heading,
    encode_bias_vectors,
    format_bias_table,
    language_bias,
)
from kd.evaluate.collapse import collapse_warning, format_verdicts
from kd.evaluate.errors import SPACES, encode_error_vectors, format_errors, retrieval_errors
from kd.evaluate.metrics import evaluate, format_table
from kd.evaluate.mining import (
    DEFAULT_K,
    DEFAULT_STRATEGY,
    DEFAULT_THRESHOLD,
    E5_THRESHOLD,
    PREBUILT_THRESHOLD,
    STRATEGIES,
)
from kd.evaluate.sts import cached_encode, format_sts_table, read_sts, sts_report
from kd.io import atomic_write_npy
from kd.langs import DEV_LANGS, normalize_lang, parse_langs
from kd.models.registry import FAST_PATHS, offline_models
from kd.search.index import index_rows, model_stamp, read_rows
from kd.search.store import DEFAULT_CANDIDATES, VectorStore, index_info

log = logging.getLogger("kd")

MINE_MAX_LINES = 100_000
"""``kd mine``'s default cap on each file: both files are embedded and held in memory."""


def _floats(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _ints(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _add_config_options(s: argparse.ArgumentParser, preset: str) -> None:
    """``kd distill``'s options, one per :class:`kd.config.TrainConfig` field, from the field's
    :class:`kd.config.Setting`; the defaults are those of the recipe ``preset``."""
    d = TrainConfig.from_preset(preset if preset in PRESETS else "default")
    types = {int: _ints, float: _floats, str: str}
    for f in fields(TrainConfig):
        name, spec, kind = f.name, SETTINGS[f.name], KINDS[f.name]
        default = getattr(d, name)
        if name == "out":
            s.add_argument(flag(name), required=True, help=f"{spec.help} (and its checkpoint)")
            s.add_argument(
                "--preset",
                choices=list(PRESETS),
                default="default",
                help="a named recipe whose settings become the defaults of the options below: "
                "default (about 10 min on 2 CPU cores), long (about 20 min on 2 cores with AMX: "
                "4 trainable layers, 2 epochs, up to 90,000 English rows), app (the app's small "
                "run), gpu (the GPU recipe: all layers, bf16, batches of 128, streaming; not yet "
                "measured on a GPU)",
            )
        elif kind is bool:
            # The preset's value is the default (--preset gpu turns --stream on).
            s.add_argument(flag(name), action="store_true", default=default, help=spec.help)
        elif name == "langs":
            s.add_argument(flag(name), default=",".join(default), help=spec.help)
        elif kind is list:  # --data, --english: repeatable
            s.add_argument(flag(name), action="append", default=[], help=spec.help)
        else:
            shown = f"default: {default}" if default != "" else "default: none"
            s.add_argument(
                flag(name),
                type=None if spec.choices else types[kind],
                choices=list(spec.choices) or None,
                default=default,
                help=f"{spec.help} ({shown})" if spec.help else f"({shown})",
            )


def _baseline_flags(parser: argparse.ArgumentParser) -> None:
    """The flags ``kd eval`` and ``kd report`` share: what a model is measured beside, on how
    many pairs."""
    parser.add_argument(
        "--teacher", default=None, help="teacher (default: the one the student learnt from)"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help="untrained student to compare with (default: the one the run started from)",
    )
    parser.add_argument(
        "--max-pairs",
        type=_ints,
        default=0,
        help="use the first N pairs per language, Tatoeba and STS alike (0: all)",
    )


def build_parser(preset: str = "default") -> argparse.ArgumentParser:
    """The parser; ``kd distill``'s defaults are those of the recipe ``preset``."""
    p = argparse.ArgumentParser(
        prog="kd",
        description="Make an English sentence-embedding model multilingual by distillation.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("distill", help="train a multilingual student to mimic an English teacher")
    _add_config_options(s, preset)

    e = sub.add_parser(
        "eval",
        help="translation retrieval on Tatoeba and/or similarity (STS) in many languages",
        description="Give --tatoeba, --sts or both.",
    )
    e.add_argument("--model", required=True, help="distilled student directory or model id")
    e.add_argument("--tatoeba", default=None, help="directory in the LASER Tatoeba format")
    e.add_argument(
        "--sts",
        default=None,
        metavar="DIR",
        help="directory of <lang>.dev.tsv STS files (sentence1, sentence2, score), English "
        "included, e.g. ../shared/data/stsb-multi-dev",
    )
    e.add_argument(
        "--langs",
        default=None,
        help="comma-separated languages (default: Tatoeba's 12 dev languages; for --sts, "
        "every language present)",
    )
    _baseline_flags(e)
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--device", choices=DEVICES, default="auto")
    e.add_argument(
        "--path",
        choices=FAST_PATHS,
        default="torch",
        help="how every model encodes: torch (default: the models as they are), onnx, int8 "
        "(ONNX Runtime: measure what a fast path keeps), auto (the fastest measured here)",
    )
    e.add_argument(
        "--errors",
        type=_ints,
        default=0,
        metavar="N",
        help="with --tatoeba: per language and model, list up to N held-out pairs retrieved "
        "wrongly (the sentence, its English, the top 5 ranked instead, with scores), and the "
        "pairs distillation fixed and broke (untrained vs distilled student)",
    )
    e.add_argument(
        "--space",
        choices=SPACES,
        default="cross",
        help="for --errors: cross (default: translations by the model against the teacher's "
        "English, the headline retrieval) or own (both sides by the model)",
    )
    e.add_argument(
        "--bias",
        action="store_true",
        help="with --tatoeba: language bias, each translation against one pool mixing every "
        "language; its nearest neighbour is its translation, a sentence in its own language "
        "or other, and the accuracy drop from the per-language pools (docs/analysis.md)",
    )

    m = sub.add_parser("embed", help="embed one sentence per line into a .npy matrix")
    m.add_argument("--model", required=True)
    m.add_argument("--in", dest="inp", required=True, help="UTF-8 text file, one sentence per line")
    m.add_argument("--out", required=True, help="output .npy file")
    m.add_argument("--batch-size", type=_ints, default=64)
    m.add_argument("--device", choices=DEVICES, default="auto")
    m.add_argument(
        "--path",
        choices=FAST_PATHS,
        default="auto",
        help="auto: the fastest path measured on this CPU whose vectors keep cosine 0.99 "
        "(once per model, cached); torch; onnx; int8",
    )

    x = sub.add_parser(
        "export",
        help="write a student as a full sentence-transformers folder, a small delta, or ONNX",
        description="A delta (kd distill --save delta) holds only the tensors training "
        "changed; --as full rebuilds the complete folder SentenceTransformer loads. --as delta "
        "turns a full student folder into a delta over the model it was distilled from. --as "
        "onnx writes the full folder with onnx/model.onnx for sentence-transformers' ONNX back "
        "end (--int8 adds onnx/model_qint8.onnx), each checked against PyTorch.",
    )
    x.add_argument("--model", required=True, help="a delta folder or a full student folder")
    x.add_argument("--out", required=True, help="a new folder to write")
    x.add_argument(
        "--as",
        dest="form",
        choices=(*SAVE_FORMS, "onnx"),
        default="full",
        help="full: a folder SentenceTransformer loads (default); delta, delta-fp16: only the "
        "tensors that differ from --base, in float32 or float16; onnx: the full folder with "
        "an ONNX graph of the transformer",
    )
    x.add_argument(
        "--int8",
        action="store_true",
        help="with --as onnx: also a dynamically quantised int8 graph (about a quarter of the "
        "size; its cosine to PyTorch is measured and printed)",
    )
    x.add_argument(
        "--base",
        default=None,
        help="for --as delta: the model the student was distilled from "
        "(default: the student of its kd_config.json)",
    )

    st = StaticSettings()
    x.add_argument(
        "--static",
        action="store_true",
        help="write a static student instead: token vectors in the teacher's space, the mean of "
        "a sentence's tokens its vector, no transformer at query time (hundreds of times "
        "faster, less accurate: docs/static.md); made from --model and the data it was "
        "distilled on (its kd_config.json)",
    )
    x.add_argument(
        "--teacher", default=None, help="with --static: the teacher (default: the run's)"
    )
    x.add_argument(
        "--data",
        action="append",
        default=[],
        help="with --static: parallel data to fit on, as kd distill's --data (default: the run's)",
    )
    x.add_argument(
        "--english",
        action="append",
        default=[],
        help="with --static: English-only text, as kd distill's --english (default: the run's)",
    )
    x.add_argument(
        "--static-rows",
        type=_ints,
        default=st.rows,
        help="with --static: training items to fit on, translations first (up to two thirds), "
        f"English sentences filling the rest (default: {st.rows})",
    )
    x.add_argument(
        "--static-pairs",
        type=_ints,
        default=st.pairs,
        help="with --static: translations a language read from the data; 0: every pair of the "
        "run's --data sources (default: 0)",
    )
    x.add_argument(
        "--static-vocab",
        choices=STATIC_VOCABS,
        default=st.vocab,
        help="with --static: seen keeps the tokens of the training items and every "
        "one-character token (a far smaller folder); all keeps the whole vocabulary "
        f"(default: {st.vocab})",
    )
    x.add_argument(
        "--static-ridge",
        type=_floats,
        default=st.ridge,
        help="with --static: how strongly token vectors stay at their start (the source "
        f"model's vector of the token alone) (default: {st.ridge})",
    )
    x.add_argument(
        "--static-iterations",
        type=_ints,
        default=st.iterations,
        help="with --static: conjugate-gradient steps fitting the table to the teacher's "
        f"vectors of the training items; 0: the start alone (default: {st.iterations})",
    )
    x.add_argument(
        "--static-dtype",
        choices=STATIC_DTYPES,
        default=st.dtype,
        help=f"with --static: how the table is stored (default: {st.dtype})",
    )
    x.add_argument("--device", choices=DEVICES, default="auto")

    r = sub.add_parser(
        "report",
        help="one self-contained HTML page (and its JSON) on a student, with its baselines",
        description="Retrieval into the teacher's space and within the student, STS within and "
        "across languages, English fidelity and the collapse measure, per language, beside the "
        "teacher and the untrained student (and --against another student), with each "
        "measure's verdict against the untrained student. The page opens offline.",
    )
    r.add_argument("model", metavar="MODEL", help="distilled student directory or model id")
    r.add_argument("--against", default=None, metavar="OTHER", help="a second student to compare")
    r.add_argument("--tatoeba", required=True, help="directory in the LASER Tatoeba format")
    r.add_argument(
        "--sts", default=None, metavar="DIR", help="directory of <lang>.dev.tsv STS files"
    )
    r.add_argument("--out", required=True, metavar="FILE.html", help="the page (FILE.json beside)")
    r.add_argument(
        "--langs", default=None, help="comma-separated languages (default: the 12 dev languages)"
    )
    _baseline_flags(r)
    r.add_argument("--device", choices=DEVICES, default="auto")

    sub.add_parser("models", help="list the models available offline and where they come from")

    pl = sub.add_parser("plot", help="write aligned-space and accuracy figures as HTML (and PNG)")
    pl.add_argument("--model", required=True, help="distilled student directory")
    pl.add_argument("--tatoeba", required=True, help="Tatoeba-format directory for the sentences")
    pl.add_argument("--langs", default=",".join(DEV_LANGS))
    pl.add_argument("--n", type=_ints, default=100, help="sentences per language")
    pl.add_argument("--method", choices=("umap", "pca"), default="umap")
    pl.add_argument("--out", required=True, help="directory for the figures")
    pl.add_argument("--png", action="store_true", help="also write PNG (needs kaleido + chromium)")
    pl.add_argument(
        "--animate",
        action="store_true",
        help="also write journey.html: the run's watched translations travelling into the "
        "teacher's space, one frame per evaluation (needs the run's watch.npz)",
    )
    pl.add_argument("--device", choices=DEVICES, default="auto")

    ix = sub.add_parser(
        "index",
        help="embed sentences into an SQLite search index (sqlite-vec)",
        description="Files: .tsv (english<TAB>translation; both sides are indexed), .jsonl "
        "(objects with 'text', 'lang' and an optional 'id'), .txt (one sentence per line; "
        "needs --lang). Running it again adds only what is new, and continues an interrupted run.",
    )
    ix.add_argument("files", nargs="+", metavar="FILE", help="sentence files to index")
    ix.add_argument("--model", required=True, help="model id or directory that embeds them")
    ix.add_argument("--db", required=True, help="index file (created if missing)")
    ix.add_argument(
        "--lang", default=None, help="language of .txt lines (and .tsv/.jsonl lacking one)"
    )
    ix.add_argument("--batch-size", type=_ints, default=256, help="sentences per committed batch")
    ix.add_argument("--device", choices=DEVICES, default="auto")

    se = sub.add_parser("search", help="the sentences of an index nearest to a query")
    se.add_argument(
        "query",
        nargs="*",
        help="the text to search for; several queries share one model load",
    )
    se.add_argument(
        "--queries",
        default=None,
        metavar="FILE",
        help="a UTF-8 file of queries, one a line (beside or instead of QUERY)",
    )
    se.add_argument("--db", required=True, help="index file made by kd index")
    se.add_argument(
        "--model",
        default=None,
        help="model that embeds the query (default: the index's; a student distilled from it "
        "also works)",
    )
    se.add_argument("-k", type=_ints, default=10, help="how many results")
    se.add_argument("--lang", default=None, help="only results in this language")
    se.add_argument(
        "--candidates",
        type=_ints,
        default=DEFAULT_CANDIDATES,
        help="rows the fast sign-bit search passes on to exact rescoring (more: slower, closer "
        "to --exact)",
    )
    se.add_argument("--exact", action="store_true", help="score every row (slow, for checking)")
    se.add_argument("--json", action="store_true", help="print JSON instead of a table")
    se.add_argument("--device", choices=DEVICES, default="auto")

    mi = sub.add_parser(
        "mine",
        help="find the translation pairs between two unaligned files (margin scoring)",
        description="Each line of --out is source<TAB>target<TAB>margin, best margin first. The "
        "margin is a pair's cosine over the mean cosine of each side's k nearest neighbours on "
        "the other side (Artetxe & Schwenk 2019); docs/mining.md has the measured F1.",
    )
    mi.add_argument("src", metavar="SRC.txt", help="UTF-8 file, one sentence a line")
    mi.add_argument("tgt", metavar="TGT.txt", help="UTF-8 file, one sentence a line")
    mi.add_argument("--out", required=True, help="the mined pairs, a .tsv file")
    mi.add_argument(
        "--model",
        default=None,
        help="the model that embeds both files (default: the pre-built student, or "
        "intfloat/multilingual-e5-small where there is none)",
    )
    mi.add_argument(
        "--threshold",
        type=_floats,
        default=None,
        help=f"least margin kept (default: the model's measured one: {PREBUILT_THRESHOLD} for the "
        f"pre-built student, {E5_THRESHOLD} for multilingual-e5-small; {DEFAULT_THRESHOLD} for "
        "any other model)",
    )
    mi.add_argument(
        "-k", type=_ints, default=DEFAULT_K, help=f"neighbours in the margin (default: {DEFAULT_K})"
    )
    mi.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=DEFAULT_STRATEGY,
        help="max: both directions' best candidates, best first, each sentence once (default); "
        "intersection: only mutual best; forward/backward: each line of SRC/TGT its best",
    )
    mi.add_argument(
        "--max-lines",
        type=_ints,
        default=MINE_MAX_LINES,
        help=f"most sentences read from each file (default: {MINE_MAX_LINES:,})",
    )
    mi.add_argument("--batch-size", type=_ints, default=64)
    mi.add_argument("--device", choices=DEVICES, default="auto")
    return p


# ---- commands ------------------------------------------------------------------------------------
def cmd_distill(args: argparse.Namespace) -> int:
    from kd.train.run import distill

    # Every distill option is named after the TrainConfig field it sets.
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    bars: dict[str, tqdm] = {}

    def progress(phase: str, done: int, total: int) -> None:
        bar = bars.get(phase)
        if bar is None:
            for other in list(bars):  # one bar at a time: a new phase closes the last one
                bars.pop(other).close()
            bar = bars[phase] = tqdm(total=total, desc=phase, unit="sent", leave=False)
        bar.update(done - bar.n)

    train_bar: list[tqdm] = []

    def on_step(step: int, m: dict) -> None:
        if not train_bar:
            train_bar.append(
                tqdm(total=m["total_steps"], initial=step - 1, desc="distill", unit="step")
            )
        bar = train_bar[0]
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{m['loss']:.4f}", epoch=f"{m['epoch']:.2f}")
        if "eval" in m:
            mean = m["eval"]["mean"]
            tqdm.write(
                f"step {step}: loss {m['loss']:.4f}, cross-model acc "
                f"{mean.get('cross_mean_accuracy', 0):.3f}, student acc "
                f"{mean['student_mean_accuracy']:.3f}, unrelated cosine "
                f"{mean.get('unrelated_cosine', float('nan')):.3f}"
            )
            if m.get("collapse_alarm"):
                check = {"unrelated_cosine": m["unrelated_cosine"], "alarm": True}
                check["threshold"] = m["collapse_threshold"]
                tqdm.write(f"kd: {collapse_warning(check, f'at step {step}')}", file=sys.stderr)

    def status(message: str) -> None:
        for phase in list(bars):  # a new phase: finished progress bars go away
            bars.pop(phase).close()
        tqdm.write(f"kd: {message}")

    def on_eval(stage: str, per_lang: dict) -> None:
        mean = per_lang["mean"]
        when = "before training" if stage == "student_untrained" else f"step 0 ({cfg.head} head)"
        tqdm.write(
            f"{when}: cross-model acc {mean.get('cross_mean_accuracy', 0):.3f}, "
            f"student acc {mean['student_mean_accuracy']:.3f}"
        )

    try:
        result = distill(cfg, on_step=on_step, status=status, progress=progress, on_eval=on_eval)
    finally:  # an error's one line must not share a line with an open bar
        for bar in [*bars.values(), *train_bar]:
            bar.close()
        bars.clear()
    from kd.train.distributed import from_env

    if not from_env().main:  # under torchrun, rank 0 alone reports
        return 0
    _print_run_summary(result.metrics)
    _print_alarms(result.metrics)
    if result.saved == "delta":
        print(
            f"kd: student saved to {result.out} as a delta (kd loads it as a model; `kd export "
            f"--model {result.out} --out DIR` writes the folder SentenceTransformer loads)"
        )
    else:
        print(f"kd: student saved to {result.out} (SentenceTransformer('{result.out}') loads it)")
    return 0


def _print_alarms(metrics: dict) -> None:
    """After a run: each measure's verdict against the untrained student (stdout), and a
    warning line on stderr when the student collapsed or got worse on any measure."""
    found = metrics.get("verdicts") or {}
    if found:
        lines = format_verdicts(found).splitlines()
        for line in lines:
            if line.startswith("WARNING"):
                print(f"kd: {line}", file=sys.stderr)
            else:
                print(line)
    collapse = metrics.get("collapse") or {}
    final = collapse.get("final") or {}
    if final.get("alarm"):
        print(f"kd: {collapse_warning(final, 'after training')}", file=sys.stderr)
    elif collapse.get("alarm"):
        steps = [
            r["step"]
            for r in collapse.get("by_step", [])
            if r["unrelated_cosine"] > (collapse.get("threshold") or 1.0)
        ]
        value = final.get("unrelated_cosine")
        now = f"; the final student's unrelated cosine is {value:.3f}" if value is not None else ""
        print(
            f"kd: WARNING: the collapse alarm rang during training (steps {steps}){now}",
            file=sys.stderr,
        )


def _print_run_summary(metrics: dict) -> None:
    table = {
        k: {"mean": metrics[k]["mean"]}
        for k in ("teacher", "student_untrained", "student_distilled")
        if k in metrics
    }
    if table:
        print("held-out pairs from the training source, mean over languages:")
        print(format_table(table))
    if "sts" in metrics:
        print(f"STS, {metrics['sts']['pairs']} pairs a language (Spearman x 100):")
        print(format_sts_table(metrics["sts"]))


def _fast(model, path: str):
    """``model`` on its no-grad path (:mod:`kd.models.fast`), said on stderr where it is not
    plain PyTorch or was measured. A static model has no transformer to speed up: as it is."""
    from kd.models.encoder import Encoder
    from kd.models.fast import fast_encoder

    if not isinstance(model, Encoder):
        return model
    encoder, choice = fast_encoder(model, path)
    if path != "torch":
        print(f"kd: {model.name} encodes with {choice.describe()}", file=sys.stderr)
    return encoder


def cmd_eval(args: argparse.Namespace) -> int:
    from kd.models.encoder import DEFAULT_TEACHER, pick_device, prepare_torch, resolve_model
    from kd.models.static import load_encoder

    if not args.tatoeba and not args.sts:
        raise ValueError("nothing to evaluate on; give --tatoeba DIR, --sts DIR or both")
    if args.max_pairs < 0:
        raise ValueError(f"--max-pairs must be 0 (all) or positive, got {args.max_pairs}")
    if args.errors < 0:
        raise ValueError(
            f"--errors must be 0 (none) or the number of pairs to list, got {args.errors}"
        )
    if (args.errors or args.bias) and not args.tatoeba:
        raise ValueError("--errors and --bias work on Tatoeba pairs; give --tatoeba DIR")
    sets = {}
    if args.tatoeba:
        langs = parse_langs(args.langs or ",".join(DEV_LANGS))
        sets = tatoeba_sets(args.tatoeba, langs, args.max_pairs)
    sts_sets = read_sts(args.sts, args.langs, max_rows=args.max_pairs) if args.sts else {}
    device = pick_device(args.device)
    prepare_torch(device)
    run_cfg = {}
    cfg_path = Path(resolve_model(args.model)) / "kd_config.json"
    if cfg_path.exists():
        run_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    teacher_id = args.teacher or run_cfg.get("teacher", DEFAULT_TEACHER)
    baseline_id = args.baseline or run_cfg.get("student")

    teacher = _fast(load_encoder(teacher_id, device), args.path)
    teacher_en = {lang: teacher.encode(en) for lang, (en, _x) in sets.items()}
    teacher_sts = cached_encode(teacher.encode)  # one teacher pass shared by every model
    results: dict = {}
    sts = sts_report(sts_sets, teacher_sts, {}) if sts_sets else {}

    error_vecs: dict[str, dict] = {lang: {} for lang in sets}
    error_notes: list[str] = []
    bias: dict[str, dict] = {}

    def measure(name: str, model) -> None:
        """Every evaluation of one model while it is loaded (models load one at a time); its
        sentences are embedded once for all of them."""
        encode = cached_encode(model.encode) if args.errors or args.bias else model.encode
        if sets:
            results[name] = evaluate(sets, teacher_en, encode)
        if args.errors:
            for lang, (en, x) in sets.items():
                vecs, notes = encode_error_vectors(
                    en, x, teacher_en[lang], {name: encode}, args.space
                )
                error_vecs[lang].update(vecs)
                error_notes.extend(n for n in notes if n not in error_notes)
        if args.bias:
            bias[name] = language_bias(sets, encode_bias_vectors(sets, encode))
        if sts_sets and name != "teacher":
            sts.update(sts_report(sts_sets, teacher_sts, {name: model.encode}))

    measure("teacher", teacher)
    if baseline_id:
        base = _fast(load_encoder(baseline_id, device), args.path)
        measure("student_untrained", base)
        del base
    model = _fast(load_encoder(args.model, device), args.path)
    measure("student_distilled" if baseline_id else "model", model)
    errors = {}
    if args.errors:
        pair = ("student_untrained", "student_distilled") if baseline_id else (None, None)
        errors = {
            lang: retrieval_errors(
                *sets[lang], vecs, limit=args.errors, before=pair[0], after=pair[1]
            )
            for lang, vecs in error_vecs.items()
        }
    if args.json:
        report = {
            "teacher_id": teacher_id,
            "baseline_id": baseline_id,
            "model": args.model,
            "path": args.path,
        }
        if sets:
            report["results"] = results
        if sts_sets:
            report["sts"] = sts
        if errors:
            report["errors"] = {"space": args.space, "notes": error_notes, "langs": errors}
        if bias:
            report["bias"] = bias
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    if sets:
        print(format_table(results))
    if errors:
        print()
        print(format_errors(errors, args.space, error_notes))
    if bias:
        print()
        print(bias_heading(bias))
        print(format_bias_table(bias))
    if sts_sets:
        if sets:
            print()
        untrained = f", untrained student {baseline_id}" if baseline_id else ""
        print(f"STS: {sts['pairs']} scored pairs per language")
        print(f"  models: teacher {teacher_id}{untrained}, evaluated {args.model}")
        print("  mono: both sentences in language x, embedded by the model")
        print("  cross: sentence1 in English embedded by the teacher, sentence2 in x by the model")
        print("  mean: over the languages other than English")
        print(format_sts_table(sts))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from kd.evaluate.report import build_results, write_report
    from kd.models.encoder import (
        DEFAULT_TEACHER,
        Encoder,
        pick_device,
        prepare_torch,
        resolve_model,
    )

    if args.max_pairs < 0:
        raise ValueError(f"--max-pairs must be 0 (all) or positive, got {args.max_pairs}")
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {out}: name an .html file (its JSON goes beside it)")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    langs = parse_langs(args.langs or ",".join(DEV_LANGS))
    sets = tatoeba_sets(args.tatoeba, langs, args.max_pairs)
    if not sets:
        raise ValueError(f"{args.tatoeba}: no Tatoeba pairs for {', '.join(langs)}")
    sts_sets = read_sts(args.sts, args.langs, max_rows=args.max_pairs) if args.sts else {}
    run_cfg = {}
    cfg_path = Path(resolve_model(args.model)) / "kd_config.json"
    if cfg_path.exists():
        run_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    teacher_id = args.teacher or run_cfg.get("teacher", DEFAULT_TEACHER)
    baseline_id = args.baseline or run_cfg.get("student")
    if not baseline_id:
        raise ValueError(
            f"{args.model}: no kd_config.json names the student it started from; give --baseline"
        )
    device = pick_device(args.device)
    prepare_torch(device)
    started = time.perf_counter()
    teacher = Encoder.load(teacher_id, device)
    ids = {"teacher": teacher_id, "student_untrained": baseline_id, "model": args.model}
    if args.against:
        ids["against"] = args.against

    def loader(name: str):
        def load():
            print(f"kd: measuring {name}", file=sys.stderr)
            return Encoder.load(name, device).encode  # build_results caches its sentences

        return load

    models = {key: loader(name) for key, name in ids.items() if key != "teacher"}
    pairs = sorted({len(en) for en, _x in sets.values()})
    many = f"{pairs[0]}" if len(pairs) == 1 else f"{pairs[0]}-{pairs[-1]}"
    source = f"{args.tatoeba} ({many} pairs a language)"
    results = build_results(sets, sts_sets, teacher.encode, models, ids, source)
    results["seconds"] = round(time.perf_counter() - started, 1)
    page, data = write_report(results, out)
    print(f"kd: wrote {page} and {data} in {results['seconds']:.0f} s")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from kd.models.encoder import pick_device, prepare_torch
    from kd.models.static import load_encoder

    path = Path(args.inp)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (save the file as UTF-8)") from None
    if not lines:
        raise ValueError(f"{path}: empty file, nothing to embed")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"{path}:{i}: empty line (row i of the output is line i; remove it)")
    device = pick_device(args.device)
    prepare_torch(device)
    model = _fast(load_encoder(args.model, device), args.path)

    with tqdm(total=len(lines), desc="embed", unit="sent") as bar:
        vecs = model.encode(
            lines, batch_size=args.batch_size, progress=lambda d, n: bar.update(d - bar.n)
        )
    out = Path(args.out)

    atomic_write_npy(out, vecs)
    print(f"kd: wrote {vecs.shape[0]} x {vecs.shape[1]} float32 to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.static:
        return _export_static(args, started)
    from kd.models.export import export

    saved = export(args.model, args.out, args.form, args.base, int8=args.int8)
    print(f"kd: {saved.describe()} (in {time.perf_counter() - started:.1f} s)")
    return 0


def _export_static(args: argparse.Namespace, started: float) -> int:
    from kd.config import StaticSettings
    from kd.models.static import build_static

    if args.form != "full" or args.int8 or args.base:
        raise ValueError("--static makes its own folder; it goes without --as, --int8 and --base")
    settings = StaticSettings(
        rows=args.static_rows,
        pairs=args.static_pairs,
        vocab=args.static_vocab,
        ridge=args.static_ridge,
        iterations=args.static_iterations,
        dtype=args.static_dtype,
    )
    built = build_static(
        args.model,
        args.out,
        teacher=args.teacher,
        data=args.data or None,
        english=args.english or None,
        settings=settings,
        device=args.device,
        status=lambda message: print(f"kd: {message}", file=sys.stderr),
    )
    print(f"kd: {built.describe()} (in {time.perf_counter() - started:.1f} s)")
    return 0


def cmd_models(_args: argparse.Namespace) -> int:
    for row in offline_models():
        print(f"{row['id']}  [{row['role']}, available: {row['available']}]")
        print(f"    {row['note']}")
        print(f"    package: {row['package']}")
        print(f"    path: {row['path']}")
    print("Any other Hub id or local directory (safetensors weights) also works where it can load.")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from kd_plot import plot_run

    paths, lines = plot_run(
        model=args.model,
        tatoeba=args.tatoeba,
        langs=args.langs,
        n=args.n,
        method=args.method,
        out=args.out,
        png=args.png,
        device=args.device,
        animate=args.animate,
    )
    for line in lines:
        print(f"kd: {line}")
    for p in paths:
        print(f"kd: wrote {p}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from kd.models.encoder import pick_device, prepare_torch
    from kd.models.static import load_encoder

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    rows = [row for name in args.files for row in read_rows(name, args.lang)]
    device = pick_device(args.device)
    prepare_torch(device)
    model = load_encoder(args.model, device)
    bars: list[tqdm] = []  # opened once the index is open and checked

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="index", unit="sent"))
        bars[0].update(done - bars[0].n)

    try:
        counts = index_rows(model, args.db, rows, args.batch_size, progress)
    finally:
        for bar in bars:
            bar.close()
    print(
        f"kd: indexed {counts['new']} new sentences ({counts['present']} were already there); "
        f"{args.db} holds {counts['total']}"
    )
    return 0


def _queries(args: argparse.Namespace) -> list[str]:
    """The queries of ``kd search``: the arguments, then the lines of ``--queries``."""
    queries = [q.strip() for q in args.query]
    if any(not q for q in queries):
        raise ValueError("empty query; give the text to search for")
    if args.queries:
        try:
            text = Path(args.queries).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"--queries {args.queries}: cannot read it ({err})") from None
        queries += [line.strip() for line in text.splitlines() if line.strip()]
    if not queries:
        raise ValueError("no query; give the text to search for, or --queries FILE")
    return queries


def cmd_search(args: argparse.Namespace) -> int:
    queries = _queries(args)
    if not 1 <= args.k <= 4096:
        raise ValueError(f"-k must be from 1 to 4096, got {args.k}")
    if not 1 <= args.candidates <= 4096:
        raise ValueError(f"--candidates must be from 1 to 4096, got {args.candidates}")
    info = index_info(args.db)
    lang = normalize_lang(args.lang) if args.lang else None
    if lang is not None and lang not in info["langs"]:
        held = ", ".join(info["langs"]) or "nothing yet"
        raise ValueError(f"{args.db} has no sentences in {lang!r}; it holds: {held}")
    from kd.models.encoder import pick_device, prepare_torch
    from kd.models.static import load_encoder

    device = pick_device(args.device)
    prepare_torch(device)
    model = load_encoder(args.model or info["model"].model_id, device)
    with VectorStore.open(args.db, model_stamp(model)) as store:
        if store.note:
            print(
                f"kd: note: {store.note} ({model.name} -> {store.model.model_id})", file=sys.stderr
            )
        vectors = model.encode(queries)  # one load, one batch for every query
        found = store.search(vectors, args.k, lang, args.candidates, exact=args.exact)
    if args.json:
        rows = [[h.__dict__ for h in hits] for hits in found]
        if len(queries) > 1:
            rows = [{"query": q, "hits": r} for q, r in zip(queries, rows, strict=True)]
        print(json.dumps(rows if len(queries) > 1 else rows[0], ensure_ascii=False, indent=2))
        return 0
    for n, (query, hits) in enumerate(zip(queries, found, strict=True)):
        if len(queries) > 1:
            print(f"{'' if n == 0 else chr(10)}query: {query}")
        for rank, h in enumerate(hits, 1):
            ident = f" [{h.id}]" if h.id is not None else ""
            print(f"{rank:>3}  {h.score:.3f}  {h.lang}  {h.text}{ident}  ({h.source})")
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    from kd.evaluate.mining import default_threshold, mine, read_sentences
    from kd.io import atomic_write_text
    from kd.models.encoder import DEFAULT_STUDENT, Encoder, pick_device, prepare_torch
    from kd.models.registry import prebuilt_dir

    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    if args.max_lines < 1:
        raise ValueError(f"--max-lines must be at least 1, got {args.max_lines}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    src = read_sentences(args.src, args.max_lines)  # bad files end here, before a model loads
    tgt = read_sentences(args.tgt, args.max_lines)
    name = args.model or str(prebuilt_dir() or DEFAULT_STUDENT)
    threshold = default_threshold(name) if args.threshold is None else args.threshold
    device = pick_device(args.device)
    prepare_torch(device)
    model = Encoder.load(name, device)
    vectors = []
    for label, texts in (("source", src), ("target", tgt)):
        with tqdm(total=len(texts), desc=f"embed {label}", unit="sent") as bar:
            vectors.append(
                model.encode(
                    texts, batch_size=args.batch_size, progress=lambda d, n: bar.update(d - bar.n)
                )
            )
    pairs = mine(*vectors, k=args.k, threshold=threshold, strategy=args.strategy)
    lines = [f"{src[m.src]}\t{tgt[m.tgt]}\t{m.margin:.4f}\n" for m in pairs]
    atomic_write_text(args.out, "".join(lines))
    print(
        f"kd: {len(pairs):,} pairs with margin >= {threshold} ({args.strategy}, k="
        f"{args.k}) between {len(src):,} and {len(tgt):,} sentences, embedded by "
        f"{model.name}; wrote {args.out}"
    )
    return 0


COMMANDS = {
    "distill": cmd_distill,
    "eval": cmd_eval,
    "report": cmd_report,
    "embed": cmd_embed,
    "export": cmd_export,
    "models": cmd_models,
    "plot": cmd_plot,
    "index": cmd_index,
    "search": cmd_search,
    "mine": cmd_mine,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kd`` console script."""
    logging.basicConfig(level=logging.WARNING, format="kd: %(message)s")
    from kd.models.encoder import quiet_transformers

    quiet_transformers()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="default")
    preset = pre.parse_known_args(argv)[0].preset
    args = build_parser(preset).parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ValueError as err:
        print(f"kd: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = {
            "distill": " (a distill run continues with --resume)",
            "index": " (finished batches are kept; the same kd index command continues)",
        }
        print(f"kd: interrupted{again.get(args.command, '')}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
