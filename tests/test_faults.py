"""Faults: a killed run resumes, half-written files never pass for whole ones, disks refuse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kd.io import atomic_write_json, atomic_write_text
from tests.test_train import _write_pairs

ROOT = Path(__file__).resolve().parents[1]


# The run stalls right after writing the checkpoint of step STALL_AT, and says so: the test kills
# it there, so the step it resumes from is known exactly (no polling race with a running job).
STALL_AT = 10
STALL = textwrap.dedent(
    """
    import inspect, sys, time
    import kd.train.checkpoint as checkpoint
    at = int(sys.argv[1])
    original = checkpoint.save_checkpoint

    def stalling(*args, **kwargs):
        original(*args, **kwargs)
        if inspect.signature(original).bind(*args, **kwargs).arguments["meta"]["step"] == at:
            print("STALLED", flush=True)
            time.sleep(120)  # killed by the test long before; bounds an orphan's life only

    checkpoint.save_checkpoint = stalling  # before kd.train.run imports it
    from kd.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def test_kill_9_then_resume(tmp_path, tiny_teacher, tiny_student):
    data = _write_pairs(tmp_path / "fr.tsv", n=400)
    out = tmp_path / "student"
    argv = [
        "distill",
        "--out",
        str(out),
        "--teacher",
        tiny_teacher,
        "--student",
        tiny_student,
        "--langs",
        "fr",
        "--max-pairs",
        "0",
        "--english-rows",
        "0",
        "--eval-pairs",
        "0",
        "--data",
        str(data),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--freeze-layers",
        "1",
        "--checkpoint-every",
        "5",
        "--device",
        "cpu",
    ]
    env = os.environ | {"KD_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", STALL, str(STALL_AT), *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        said = []
        for line in proc.stdout:  # ends only when the run stalls, finishes or fails
            if line.strip() == "STALLED":
                break
            said.append(line)
        else:
            pytest.fail(f"the run ended before step {STALL_AT}'s checkpoint: {said[-3:]}")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    meta = out / "checkpoint" / "meta.json"
    assert json.loads(meta.read_text())["step"] == STALL_AT
    assert not (out / "metrics.json").exists()

    done = subprocess.run(
        [sys.executable, "-m", "kd.cli", *argv, "--resume"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"resumed from {out / 'checkpoint'} at step {STALL_AT}" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == metrics["total_steps"]
    history = json.loads((out / "history.json").read_text())
    assert history[0]["step"] == STALL_AT + 1
    assert not (out / "checkpoint").exists()


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"a": 1})

    def boom(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(ValueError, match="disk is full"):
        atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_read_only_directory_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ValueError, match="cannot write here"):
        atomic_write_text(ro / "x.txt", "x")


def test_read_only_directory_as_root(tmp_path, monkeypatch):
    """Root ignores permission bits, so the refusal is simulated at the OS call."""

    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(ValueError, match="cannot write here"):
        atomic_write_text(tmp_path / "x.txt", "x")
