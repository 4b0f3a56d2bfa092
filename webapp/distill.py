"""The Distill tab: validate the form, run one distillation at a time, stream its progress."""

from __future__ import annotations

import functools
import logging
import queue
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from kd.langs import DEV_LANGS, lang_name
from webapp import settings
from webapp.guards import check_model_name
from webapp.model_cache import training_finished, training_started
from webapp.session import Visitor, user_error
from webapp.settings import (
    MAX_ENGLISH_ROWS,
    MAX_EPOCHS,
    MAX_EVAL_PAIRS,
    MAX_LANGS,
    MAX_PAIRS,
    MIN_PAIRS_SHOWN,
)
from webapp.uploads import check_upload, read_upload

log = logging.getLogger("kd.app")


@functools.lru_cache(maxsize=1)
def _gettext_counts() -> dict[str, int]:
    from kd.gettext_source import gettext_counts

    try:
        return gettext_counts()
    except (OSError, ValueError) as err:
        log.warning("no gettext catalogs: %s", err)
        return {}


def lang_label(code: str, counts: dict[str, int] | None) -> str:
    try:
        name = lang_name(code)
    except ValueError:
        name = code
    if counts is None:
        return f"{code} · {name}"
    return f"{code} · {name} ({counts.get(code, 0):,} pairs)"


def language_choices() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(label with the number of gettext pairs, code) of the development languages, and of
    the other languages with at least ``MIN_PAIRS_SHOWN`` pairs, most pairs first."""
    counts = _gettext_counts()
    extra = [
        c for c, n in counts.items() if c not in DEV_LANGS and c != "en" and n >= MIN_PAIRS_SHOWN
    ]
    dev = [(lang_label(c, counts), c) for c in DEV_LANGS]
    return dev, [(lang_label(c, counts), c) for c in extra]


def language_update():
    dev, more = language_choices()
    return gr.CheckboxGroup(choices=dev), gr.Dropdown(choices=more)


def _whole(value, field: str, low: int, high: int) -> int:
    if value is None or value == "":
        raise ValueError(f"'{field}' is empty; type a number from {low} to {high}")
    number = float(value)
    if number != int(number) or not low <= number <= high:
        raise ValueError(f"'{field}' must be a whole number from {low} to {high}, got {value}")
    return int(number)


def make_config(
    teacher: str,
    student: str,
    langs: list[str] | None,
    more_langs: list[str] | None,
    max_pairs,
    english_rows,
    epochs,
    batch_size,
    lr,
    loss: str,
    eval_pairs,
    evals,
    freeze_layers,
    own_pairs: str | None,
    out: str = "student",
    visitor: Visitor | None = None,
):
    """The run's ``TrainConfig`` from the form, with the app's caps; ``ValueError`` if bad.

    The teacher and student names are checked first (:func:`webapp.guards.check_model_name`):
    a typed path must lie inside the model folders, ``visitor``'s own included.
    """
    from kd.config import TrainConfig

    teacher = check_model_name(teacher, visitor)
    student = check_model_name(student, visitor)
    langs = [*(langs or []), *(more_langs or [])]
    data, own = [], 0
    if own_pairs:
        file = check_upload(own_pairs, "your own pairs")
        # Read now: a malformed file is reported at once, not minutes into the run.
        translated = [p for p in read_upload(file, langs) if p.other is not None]
        langs += [p.lang for p in translated]  # the file's languages join the run
        own = len(translated)
        data.append(str(file))
    langs = list(dict.fromkeys(langs))
    if not langs:
        raise ValueError("pick at least one language to distil into")
    if len(langs) > MAX_LANGS:
        raise ValueError(f"{len(langs)} languages; pick at most {MAX_LANGS}")
    max_pairs = _whole(max_pairs, "pairs per language", 0, MAX_PAIRS)
    if data and max_pairs:  # the default source still gives "pairs per language"; the file joins
        data.insert(0, "default")
    english_rows = _whole(english_rows, "English-only rows", 0, MAX_ENGLISH_ROWS)
    epochs = _whole(epochs, "epochs", 1, MAX_EPOCHS)
    batch_size = _whole(batch_size, "batch size", 1, 256)
    eval_pairs = _whole(eval_pairs, "held-out pairs per language", 0, MAX_EVAL_PAIRS)
    evals = _whole(evals, "evaluations during training", 0, 20)
    freeze_layers = _whole(freeze_layers, "frozen layers", 0, 48)
    if lr is None or lr == "":
        raise ValueError("'learning rate' is empty; try 1e-4")
    # Steps, estimated before the data is read, to space the dev evaluations out.
    items = english_rows + 2 * (max_pairs * len(langs) + own)
    steps = max(1, items // batch_size) * epochs
    eval_every = max(1, steps // (evals + 1)) if evals and eval_pairs else 0
    return TrainConfig(
        out=out,
        teacher=teacher,
        student=student,
        langs=langs,
        max_pairs=max_pairs,
        english_rows=english_rows,
        data=data,
        epochs=epochs,
        batch_size=batch_size,
        lr=float(lr),
        loss=loss,
        eval_pairs=eval_pairs,
        eval_every=eval_every,
        freeze_layers=freeze_layers,
        checkpoint_every=0,
        device="auto",
    )


def _check_model_name(name: str) -> None:
    """Cheap checks of a model name before queueing (offline ids resolve lazily)."""
    from kd.models import OFFLINE_MODELS, resolve_model

    if (name or "").strip() not in OFFLINE_MODELS:
        resolve_model(name)


def prepare_run(*args):
    """Validate the form and arm the visitor's run; ``gr.Error`` at once if anything is wrong.

    Takes the same arguments as :func:`run_distillation` (the form, then the visitor).
    """
    *form, visitor = args
    visitor = visitor if visitor is not None else Visitor()
    try:
        cfg = make_config(*form, visitor=visitor)
        _check_model_name(cfg.teacher)
        _check_model_name(cfg.student)
    except ValueError as err:
        raise user_error(str(err)) from None
    visitor.stop_requested = False
    visitor.queued = True
    return "Queued: waiting for the training slot (one distillation at a time).", visitor


def request_stop(visitor: Visitor | None) -> str:
    """The Stop button: the run ends after the current step; the student so far is kept."""
    if visitor is None or not (visitor.training or visitor.queued):
        return "Nothing is running."
    visitor.stop_requested = True
    if visitor.training:
        return "Stopping: the student trained so far is being evaluated and saved…"
    return "Stopped before the run started."


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _curve(history: list[dict], accuracy: list[dict], references: dict | None = None):
    import pandas as pd

    from viz.figures import training_curves

    hist = pd.DataFrame(history, columns=["step", "loss"])
    acc = pd.DataFrame(accuracy, columns=["step", "lang", "accuracy"]) if accuracy else None
    return training_curves(hist, acc, references, title="distillation")


def _headline(metrics: dict) -> str:
    return "cross_mean_accuracy" if "cross_mean_accuracy" in metrics else "student_mean_accuracy"


STAGES = {"teacher": "teacher", "student_untrained": "student, untrained"}
STAGES["student_distilled"] = "student, distilled"
RESULT_COLUMNS = {
    "cross_mean_accuracy": "cross-model retrieval",
    "student_mean_accuracy": "own retrieval",
    "english_fidelity": "English fidelity",
    "mse_x100": "MSE×100",
}
STS_COLUMNS = {"mono": "STS same language ρ×100", "cross": "STS en→x ρ×100"}


def results_table(metrics: dict):
    """Before/after table: one row per (language, model), the summary metrics as columns.

    When the run measured STS (``metrics["sts"]``, see :mod:`kd.sts`), two more columns give
    each model's Spearman x 100 in that language (mean: over the languages other than English),
    and rows for English show the teacher's reference score.
    """
    import pandas as pd

    present = [stage for stage in STAGES if stage in metrics]
    langs = list(dict.fromkeys(lang for s in present for lang in metrics[s]))
    langs = ["mean"] + [lang for lang in langs if lang != "mean"] if "mean" in langs else langs
    sts = metrics.get("sts") or {}
    if "en" in sts.get("teacher", {}) and "en" not in langs:  # the reference: teacher on English
        langs.insert(1 if langs[:1] == ["mean"] else 0, "en")
    columns = {**RESULT_COLUMNS, **(STS_COLUMNS if sts else {})}
    rows = []
    for lang in langs:
        for stage in present:
            values = {**metrics[stage].get(lang, {}), **sts.get(stage, {}).get(lang, {})}
            row = {"language": lang, "model": STAGES[stage]}
            row |= {
                label: round(values[k], 3) if k in values else None for k, label in columns.items()
            }
            rows.append(row)
    return pd.DataFrame(rows, columns=["language", "model", *columns.values()])


def _bars(metrics: dict):
    import pandas as pd

    from viz.figures import accuracy_bars, empty_figure

    rows = [
        {"lang": lang, "model": STAGES[stage], "accuracy": values["cross_mean_accuracy"]}
        for stage in STAGES
        for lang, values in metrics.get(stage, {}).items()
        if "cross_mean_accuracy" in values
    ]
    if not rows:
        return empty_figure("no held-out pairs were evaluated")
    return accuracy_bars(pd.DataFrame(rows), title="cross-model retrieval on held-out pairs")


def _zip_student(out: Path) -> str:
    """The student folder as a zip (stored, not deflated: float weights barely compress)."""
    path = out.parent / f"kd-student-{out.name}.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in sorted(out.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(out).as_posix())
    return str(path)


# Held by the worker thread for the whole run, not just while the page's event lasts: when a
# visitor closes the tab, gradio frees the event's slot at once, but the worker still needs a
# moment to notice the stop and save; the next run waits here instead of overlapping with it.
_training_slot = threading.Lock()


def _replace_student(visitor: Visitor, folder: Path, zip_path: str | None) -> None:
    """Make ``folder`` the visitor's student; the previous one's files go (one per visitor)."""
    old = [visitor.student_dir, visitor.student_zip]
    visitor.student_dir = str(folder)
    visitor.student_zip = zip_path
    visitor.teacher = None
    visitor.metrics = None
    for path in old:
        if path and Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path:
            Path(path).unlink(missing_ok=True)


def _student_root(folder: Path) -> Path:
    """The sentence-transformers folder in an unpacked zip: the top, or its single subfolder."""
    if (folder / "modules.json").is_file():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "modules.json").is_file():
        return children[0]
    raise ValueError(
        "the zip holds no sentence-transformers model (no modules.json at its top); upload the "
        "zip the Distill tab offered, or a zip of a folder saved by SentenceTransformer.save"
    )


def load_student_zip(path: str | None, visitor: Visitor | None):
    """The Distill tab's "bring back a student" upload: unpack, check and load a student zip.

    The zip is unpacked by :func:`kd.archive.safe_extract` (no absolute or ``..`` paths, no
    links, no pickle files, capped members and size) into the visitor's own work folder, and
    the model is loaded once to prove that it works. It then becomes the visitor's student, as
    if they had just distilled it: Compare and Aligned spaces show it.

    Returns:
        (status Markdown, visitor).

    Raises:
        gr.Error: no file, the wrong type or size, an unsafe or damaged zip, a model that does
            not load, or a distillation of this visitor's still running.
    """
    from kd.archive import safe_extract
    from webapp.model_cache import get_encoder

    visitor = visitor if visitor is not None else Visitor()
    out = None
    try:
        if visitor.training or visitor.queued:
            raise ValueError(
                "your distillation is still running; wait for it to end (or press Stop), then "
                "load the zip"
            )
        file = check_upload(
            path,
            "a student zip",
            suffixes=(".zip",),
            limit=settings.MAX_STUDENT_ZIP_BYTES,
            hint="upload the .zip the Distill tab offered (kd-student-run-N.zip)",
        )
        out = visitor.new_run_dir()
        safe_extract(
            file,
            out,
            max_members=settings.MAX_STUDENT_ZIP_MEMBERS,
            max_bytes=settings.MAX_STUDENT_UNZIPPED_BYTES,
        )
        folder = _student_root(out)
        try:
            encoder = get_encoder(str(folder), public=False)
        except ValueError:
            raise
        except Exception as err:  # a damaged weights file, an unknown architecture
            raise ValueError(f"the zip's model does not load ({type(err).__name__})") from None
    except ValueError as err:
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
        message = str(err)
        if out is not None:  # the server's folder names mean nothing to the visitor
            message = message.replace(str(out.resolve()), "the zip").replace(str(out), "the zip")
        raise user_error(message) from None
    _replace_student(visitor, folder, None)
    return (
        f"**Student loaded** from {Path(path).name} ({encoder.dim}-d vectors). It is yours "
        "for this session: the Compare and Aligned-spaces tabs now show it as *student, "
        "distilled*.",
        visitor,
    )


def _train_worker(cfg, events: queue.Queue, visitor: Visitor) -> None:
    from kd.train import distill

    if not _training_slot.acquire(blocking=False):
        events.put(("status", "waiting for the previous run to finish saving…"))
        while not _training_slot.acquire(timeout=0.5):
            if visitor.stop_requested:
                events.put(("error", "stopped before the run started"))
                return
    try:
        result = distill(
            cfg,
            on_step=lambda step, record: events.put(("step", (step, record))),
            should_stop=lambda: visitor.stop_requested,
            status=lambda message: events.put(("status", message)),
            progress=lambda phase, done, total: events.put(("progress", (phase, done, total))),
        )
        events.put(("done", result))
    except ValueError as err:
        events.put(("error", str(err)))
    except Exception as err:  # shown to the visitor; the server keeps serving
        log.exception("distillation failed")
        events.put(("error", f"the distillation failed: {type(err).__name__}: {err}"))
    finally:
        _training_slot.release()


def run_distillation(
    teacher: str,
    student: str,
    langs: list[str] | None,
    more_langs: list[str] | None,
    max_pairs,
    english_rows,
    epochs,
    batch_size,
    lr,
    loss: str,
    eval_pairs,
    evals,
    freeze_layers,
    own_pairs: str | None,
    visitor: Visitor | None,
    progress=gr.Progress(),  # noqa: B008 - gradio injects the tracker through this default
) -> Iterator[tuple]:
    """Run one distillation in a worker thread and stream its progress.

    Yields:
        (status Markdown, loss/accuracy figure, results DataFrame, accuracy bars, zip path,
        visitor), with ``gr.skip()`` for outputs that did not change. The last yield carries
        the before/after table and the student's zip; the visitor then holds the student.

    Raises:
        gr.Error: bad settings, a model that cannot be loaded, or a failed run.
    """
    from viz.figures import empty_figure

    visitor = visitor if visitor is not None else Visitor()
    skip = gr.skip()
    visitor.queued = False
    if visitor.stop_requested:  # Stop was pressed while the run waited for the slot
        visitor.stop_requested = False
        yield "Stopped before the run started.", skip, skip, skip, skip, visitor
        return
    try:
        cfg = make_config(
            teacher,
            student,
            langs,
            more_langs,
            max_pairs,
            english_rows,
            epochs,
            batch_size,
            lr,
            loss,
            eval_pairs,
            evals,
            freeze_layers,
            own_pairs,
            out=str(visitor.new_run_dir()),
            visitor=visitor,
        )
    except ValueError as err:
        raise user_error(str(err)) from None

    events: queue.Queue = queue.Queue()
    worker = threading.Thread(
        target=_train_worker, args=(cfg, events, visitor), name="kd-distill", daemon=True
    )
    history: list[dict] = []
    accuracy: list[dict] = []
    log_lines: list[str] = []
    result = None
    visitor.training = True
    training_started()
    worker.start()
    try:
        yield (
            "Starting…",
            empty_figure("the loss curve appears with the first steps"),
            None,
            None,
            None,
            visitor,
        )
        last_yield = 0.0
        while result is None:
            try:
                kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                if not worker.is_alive() and events.empty():
                    raise user_error("the training stopped without a result") from None
                continue
            if kind == "error":
                raise user_error(payload)
            if kind == "done":
                result = payload
            elif kind == "status":
                log_lines.append(payload)
                progress(0, desc=payload)
                yield (
                    "\n".join(f"- {line}" for line in log_lines[-8:]),
                    skip,
                    skip,
                    skip,
                    skip,
                    skip,
                )
            elif kind == "progress":
                phase, done, total = payload
                progress((done, total), desc=f"encoding: {phase}", unit="sentences")
            elif kind == "step":
                step, record = payload
                total = int(record["total_steps"])
                history.append({"step": step, "loss": record["loss"]})
                for lang, values in record.get("eval", {}).items():
                    accuracy.append(
                        {"step": step, "lang": lang, "accuracy": values[_headline(values)]}
                    )
                line = (
                    f"step {step}/{total} · loss {record['loss']:.4f} · epoch "
                    f"{record['epoch']:.2f} · {record['items_per_s']:.0f} items/s · "
                    f"ETA {_duration(record['eta_s'])}"
                )
                progress((step, total), desc=line, unit="steps")
                now = time.monotonic()
                if "eval" in record or now - last_yield >= 1.0 or step == total:
                    last_yield = now
                    status = "\n".join(f"- {s}" for s in [*log_lines[-6:], line])
                    yield status, _curve(history, accuracy), skip, skip, skip, skip
    finally:
        if result is None and worker.is_alive():  # the visitor left, or the event was cancelled
            visitor.stop_requested = True
        visitor.training = False
        training_finished()

    visitor.stop_requested = False  # a Stop pressed during this run has been honoured
    metrics = result.metrics
    _replace_student(visitor, Path(result.out), _zip_student(Path(result.out)))
    visitor.teacher = cfg.teacher
    visitor.metrics = metrics
    references = {}
    for stage in ("teacher", "student_untrained"):
        mean = metrics.get(stage, {}).get("mean")
        if mean:
            references[STAGES[stage]] = mean[_headline(mean)]
    how = "stopped early" if result.stopped else "finished"
    status = (
        f"**Distillation {how}** after {result.steps} of {metrics['total_steps']} steps "
        f"({_duration(metrics['train_seconds'])} of training). The student is yours for this "
        "session: the Compare and Aligned-spaces tabs now show it too. Download it below; "
        "unzip it and load it with `SentenceTransformer(folder)`."
    )
    yield (
        status,
        _curve(history, accuracy, references),
        results_table(metrics),
        _bars(metrics),
        visitor.student_zip,
        visitor,
    )
