"""Errors shown in the page, and each visitor's own state (kept in ``gr.State``)."""

from __future__ import annotations

import html
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from webapp import settings


# ---- errors ------------------------------------------------------------------------------------
def user_error(err: Exception | str) -> gr.Error:
    """A ``gr.Error`` for bad input: the message escaped (gradio renders HTML), no traceback.

    A :class:`kd.config.ConfigError` names the form's label ("'learning rate' must be ...")
    where the CLI names its flag.
    """
    from kd.config import ConfigError

    message = err.for_page() if isinstance(err, ConfigError) else str(err)
    return gr.Error(html.escape(message, quote=False), print_exception=False)


# ---- per-visitor state -------------------------------------------------------------------------
@dataclass
class Visitor:
    """One visitor's work: kept in ``gr.State``, so two visitors never share a student.

    Plain fields only: gradio deep-copies the initial value for every new session.
    """

    workdir: str | None = None
    student_dir: str | None = None  # the distilled student (sentence-transformers folder)
    student_zip: str | None = None
    teacher: str | None = None  # the teacher it was distilled from
    metrics: dict | None = None
    config: dict | None = None  # the run prepare_run armed (TrainConfig.to_dict), until it starts
    runs: int = 0
    queued: bool = False  # Start pressed, waiting for the training slot
    training: bool = False
    stop_requested: bool = False

    def new_run_dir(self) -> Path:
        """A fresh output folder for the next run, inside this visitor's work folder."""
        if self.workdir is None or not Path(self.workdir).is_dir():
            settings.WORK_ROOT.mkdir(parents=True, exist_ok=True)
            self.workdir = tempfile.mkdtemp(prefix="visitor-", dir=settings.WORK_ROOT)
        self.runs += 1
        return Path(self.workdir) / f"run-{self.runs}"


def forget_visitor(visitor: Visitor | None) -> None:
    """``gr.State``'s delete callback: stop the visitor's training and delete their files."""
    if visitor is None:
        return
    visitor.stop_requested = True
    if visitor.workdir:
        shutil.rmtree(visitor.workdir, ignore_errors=True)
