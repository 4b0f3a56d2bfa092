"""The Distill tab's run: arm it, train in a worker thread (one at a time), stream progress.

The form and the config it gives live in :mod:`webapp.distill_form`, what a run shows in
:mod:`webapp.run_results`, the student's zip in :mod:`webapp.student_zip`.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from kd.config import TrainConfig
from kd.evaluate.collapse import collapse_warning
from kd.evaluate.watch import WatchSet
from kd.train.stopping import STOP_GRACE_S, RunStopped
from webapp import budget, settings
from webapp.distill_form import form_values, make_config, source_words
from webapp.model_cache import training_finished, training_started
from webapp.run_results import (
    STAGES,
    alarm_note,
    curve,
    headline,
    per_language_bars,
    results_table,
)
from webapp.session import Visitor, user_error, without_server_paths
from webapp.student_zip import replace_student, zip_student
from webapp.teacher_space import journey_figure
from webapp.uploads import claim

log = logging.getLogger("kd.app")


def prepare_run(*args):
    """Validate the form and arm the visitor's run; ``gr.Error`` at once if anything is wrong.

    Its only output is the visitor's state: a refused form is an error toast, and nothing
    visible gets gradio's error badge (which would sit over the last run's message).

    Takes the same arguments as :func:`run_distillation` (the form's values in
    :data:`webapp.distill_form.FORM_FIELDS` order, then the visitor). The config is built here,
    once per click, and kept on the visitor for the run that follows.
    """
    *values, visitor = args
    visitor = visitor if visitor is not None else Visitor()
    try:
        cfg = make_config(form_values(values), visitor=visitor)
        _take_turn(visitor)
    except ValueError as err:
        raise user_error(err) from None
    visitor.config = cfg.to_dict()
    visitor.stop_requested = False
    return visitor


# One run queued or running per address: three sessions of one client queued three runs, each
# holding the training slot up to RUN_MINUTES. Visitors by id, weakly (a closed page's goes).
_turns: dict[int, tuple[str, weakref.ref]] = {}
_turns_lock = threading.Lock()


def _take_turn(visitor: Visitor) -> None:
    """Mark the visitor's run as queued, unless another session from its address has one
    queued or running (the page records the address when it loads).

    Raises:
        ValueError: that address already has a run queued or running.
    """
    with _turns_lock:
        for key, (_address, ref) in list(_turns.items()):
            if ref() is None:
                del _turns[key]
        if visitor.address:
            for address, ref in _turns.values():
                other = ref()
                if (
                    address == visitor.address
                    and other is not None
                    and other is not visitor
                    and (other.queued or other.training)
                ):
                    raise ValueError(
                        "a distillation from your address is already queued or running (one at "
                        "a time per address); wait for it to end, or press Stop in its page"
                    )
            _turns[id(visitor)] = (visitor.address, weakref.ref(visitor))
        visitor.queued = True


QUEUED = "Queued: waiting for the training slot (one distillation at a time)."


def queued_message() -> str:
    """What the run's status says between an accepted form and the run's start."""
    return QUEUED


def request_stop(visitor: Visitor | None) -> str:
    """The Stop button, honoured in every phase of the run within a batch: before training
    begins the run ends with nothing kept; after, the student so far is evaluated (for
    ``STOP_GRACE_S`` seconds at most) and saved."""
    if visitor is None or not (visitor.training or visitor.queued):
        return "Nothing is running."
    visitor.stop_requested = True
    if visitor.training:
        return (
            "Stopping: if training has begun, the student trained so far is evaluated "
            f"(for {STOP_GRACE_S:g} s at most) and saved…"
        )
    return "Stopped before the run started."


def trained_on(metrics: dict, workdir: str | Path | None = None) -> str:
    """One sentence naming the data a finished run trained on, from its metrics."""
    specs = metrics.get("config", {}).get("data") or []
    names = [source_words(spec, workdir) for spec in specs]
    counts = metrics.get("data", {})
    langs = [lang for lang in counts if lang != "en"]
    pairs = sum(counts[lang] for lang in langs)
    what = " and ".join(names) or "English sentences only"
    return (
        f"Trained on {what}: {pairs:,} pairs in {len(langs)} languages, "
        f"{counts.get('en', 0):,} English sentences in all."
    )


def the_jump(metrics: dict) -> str:
    """One sentence on what the linear head did at step 0 and what the steps added, in the
    run's own numbers (cross-model retrieval on its held-out pairs, mean over languages)."""

    def mean(stage: str) -> float | None:
        values = metrics.get(stage, {}).get("mean")
        return values.get("cross_mean_accuracy") if values else None

    before, head, after = (
        mean(s) for s in ("student_untrained", "student_head", "student_distilled")
    )
    if before is None or head is None or after is None:
        return ""
    plain = metrics.get("config", {}).get("head") == "plain"
    start = (
        "the plain head (the student's own space)"
        if plain
        else "the linear head, fitted in closed form to the teacher's vectors"
    )
    return (
        f"Cross-model retrieval went from {before:.2f} (untrained) to {head:.2f} at step 0, "
        f"with {start} before any training step, and the {metrics['steps']} steps took it to "
        f"{after:.2f} (the curve's vertical jump at step 0, then its slope)."
    )


def _download_note(result) -> str:
    """How to use the zip below: a delta needs ``kd export``; a full folder loads as it is."""
    size = Path(result.out).parent / f"kd-student-{Path(result.out).name}.zip"
    # MB as the download box counts them (2**20 bytes), so the two sizes agree.
    mb = f" ({size.stat().st_size / 2**20:.1f} MB)" if size.is_file() else ""
    if result.saved == "delta":
        return (
            f"Download it below{mb}: a delta, the tensors this run changed. Unzip it (a "
            f"folder `{Path(result.out).name}`), then `kd export --model "
            f"{Path(result.out).name} --out full` writes the folder `SentenceTransformer` "
            "loads (the README inside says more)."
        )
    return f"Download it below{mb}; unzip it and load it with `SentenceTransformer(folder)`."


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


# Held by the worker thread for the whole run, not just while the page's event lasts: when a
# visitor closes the tab, gradio frees the event's slot at once, but the worker still needs a
# moment to notice the stop and save; the next run waits here instead of overlapping with it.
_training_slot = threading.Lock()


def _train_worker(cfg, events: queue.Queue, visitor: Visitor) -> None:
    from kd.train.run import distill

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
            status=lambda message: events.put(("status", without_server_paths(message))),
            progress=lambda phase, done, total: events.put(("progress", (phase, done, total))),
            on_eval=lambda stage, per_lang: events.put(("eval0", (stage, per_lang))),
        )
        events.put(("done", result))
    except RunStopped as err:  # Stop or the time limit, before training began
        events.put(("stopped", str(err)))
    except ValueError as err:
        events.put(("error", str(err)))
    except Exception as err:  # shown to the visitor; the server keeps serving
        log.exception("distillation failed")
        events.put(("error", f"the distillation failed: {type(err).__name__}: {err}"))
    finally:
        _training_slot.release()
        _prune_teacher_cache()


def _prune_teacher_cache() -> None:
    """The teacher-vector cache kept under ``settings.TEACHER_CACHE_BYTES`` (oldest first)."""
    from kd.io import cache_dir

    try:
        budget.prune_cache(cache_dir("teacher"), settings.TEACHER_CACHE_BYTES, "*.npy")
    except OSError as err:
        log.warning("could not prune the teacher cache: %s", err)


def run_distillation(*args, progress=gr.Progress()) -> Iterator[tuple]:  # noqa: B008
    """Run one distillation in a worker thread and stream its progress.

    Takes the form's values (:data:`webapp.distill_form.FORM_FIELDS` order) and the visitor,
    as :func:`prepare_run` does; the config :func:`prepare_run` kept on the visitor is used
    when there is one (the page's click), else it is built from the values (an API call that
    skipped ``prepare_run``). Gradio injects ``progress``.

    Yields:
        (status Markdown, loss/accuracy figure, results DataFrame, accuracy bars, zip path,
        the watched translations' journey into the teacher's space, visitor), with
        ``gr.skip()`` for outputs that did not change. The last yield carries the before/after
        table, the student's zip and the whole journey; the visitor then holds the student.

    Raises:
        gr.Error: bad settings, a model that cannot be loaded, or a failed run.
    """
    from viz.figures import empty_figure

    *values, visitor = args
    visitor = visitor if visitor is not None else Visitor()
    prepared, visitor.config = visitor.config, None
    skip = gr.skip()
    visitor.queued = False
    if visitor.stop_requested:  # Stop was pressed while the run waited for the slot
        visitor.stop_requested = False
        yield "Stopped before the run started.", skip, skip, skip, skip, skip, visitor
        return
    try:
        own = form_values(values).get("own_pairs")
        if own:  # this run's own upload: making room for the run must not delete it
            claim(own)
        out = str(visitor.new_run_dir())
        if prepared:
            cfg = TrainConfig.from_dict({**prepared, "out": out})
        else:
            cfg = make_config(form_values(values), out=out, visitor=visitor)
    except ValueError as err:
        raise user_error(err) from None

    events: queue.Queue = queue.Queue()
    worker = threading.Thread(
        target=_train_worker, args=(cfg, events, visitor), name="kd-distill", daemon=True
    )
    history: list[dict] = []
    accuracy: list[dict] = []
    log_lines: list[str] = []
    result = None
    stopped_early = False
    visitor.training = True
    training_started()
    holding = budget.hold(visitor.workdir)  # the disk budget spares this run's folder
    holding.__enter__()
    worker.start()
    try:
        yield (
            "Starting…",
            empty_figure("the loss curve appears with the first steps"),
            None,
            None,
            None,
            empty_figure("the held-out translations appear at the first evaluation"),
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
            if kind == "stopped":  # nothing trained: nothing to keep
                stopped_early = True
                worker.join(timeout=30)  # it only releases the slot now
                shutil.rmtree(cfg.out, ignore_errors=True)
                yield f"**Stopped**: {payload}.", skip, skip, skip, skip, skip, visitor
                return
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
                    skip,
                )
            elif kind == "eval0":  # before the first step: the curves' points at step 0
                stage, per_lang = payload
                for lang, values in per_lang.items():
                    accuracy.append({"step": 0, "lang": lang, "accuracy": values[headline(values)]})
                if stage == "student_head":
                    yield skip, curve(history, accuracy), skip, skip, skip, skip, skip
            elif kind == "progress":
                phase, done, total = payload
                what = phase if phase.startswith("evaluation") else f"encoding: {phase}"
                progress((done, total), desc=what, unit="sentences")
            elif kind == "step":
                step, record = payload
                total = int(record["total_steps"])
                history.append({"step": step, "loss": record["loss"]})
                for lang, values in record.get("eval", {}).items():
                    accuracy.append(
                        {"step": step, "lang": lang, "accuracy": values[headline(values)]}
                    )
                line = (
                    f"step {step}/{total} · loss {record['loss']:.4f} · epoch "
                    f"{record['epoch']:.2f} · {record['items_per_s']:.0f} items/s · "
                    f"ETA {_duration(record['eta_s'])}"
                )
                if record.get("unrelated_cosine") is not None:
                    line += f" · unrelated cosine {record['unrelated_cosine']:.3f}"
                if record.get("collapse_alarm"):
                    alarm = {"unrelated_cosine": record["unrelated_cosine"], "alarm": True}
                    alarm["threshold"] = record["collapse_threshold"]
                    log_lines.append(f"**{collapse_warning(alarm, f'at step {step}')}**")
                progress((step, total), desc=line, unit="steps")
                now = time.monotonic()
                if "eval" in record or now - last_yield >= 1.0 or step == total:
                    last_yield = now
                    status = "\n".join(f"- {s}" for s in [*log_lines[-6:], line])
                    # Live, where cheap: the watched translations so far, one PCA fit.
                    watched = journey_figure(record["watch"], "pca") if "watch" in record else skip
                    yield status, curve(history, accuracy), skip, skip, skip, watched, skip
    finally:
        if stopped_early:  # the worker has honoured the Stop
            visitor.stop_requested = False
        elif result is None and worker.is_alive():  # the visitor left, or the event was cancelled
            visitor.stop_requested = True
        visitor.training = False
        training_finished()
        holding.__exit__(None, None, None)

    visitor.stop_requested = False  # a Stop pressed during this run has been honoured
    metrics = result.metrics
    replace_student(visitor, Path(result.out), zip_student(Path(result.out)))
    visitor.teacher = cfg.teacher
    visitor.metrics = metrics
    references = {}
    for stage in ("teacher", "student_untrained"):
        mean = metrics.get(stage, {}).get("mean")
        if mean:
            references[STAGES[stage]] = mean[headline(mean)]
    how = "stopped early" if result.stopped else "finished"
    why = f" ({metrics['stop_reason']})" if result.stopped and metrics.get("stop_reason") else ""
    cut = (
        f" {metrics['evaluation_cut'][:1].upper()}{metrics['evaluation_cut'][1:]}."
        if (metrics.get("evaluation_cut"))
        else ""
    )
    status = (
        f"**Distillation {how}**{why} after {result.steps} of {metrics['total_steps']} steps "
        f"({_duration(metrics['train_seconds'])} of training).{cut} "
        f"{trained_on(metrics, visitor.workdir)} {the_jump(metrics)} The student is yours for "
        "this session: the Compare, Aligned-spaces and Search tabs now show it too. "
        + _download_note(result)
    )
    alarms = alarm_note(metrics)
    if alarms:
        status = f"{status}\n\n{alarms}"
    yield (
        status,
        curve(history, accuracy, references),
        results_table(metrics),
        per_language_bars(metrics),
        visitor.student_zip,
        journey_figure(WatchSet.load(result.out)),
        visitor,
    )
