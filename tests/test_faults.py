"""Faults: a killed run resumes, half-written files never pass for whole ones, disks refuse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kd.io import atomic_write_json, atomic_write_text
from tests.test_train import _write_pairs


def test_kill_9_then_resume(tmp_path, tiny_teacher, tiny_student):
    data = _write_pairs(tmp_path / "fr.tsv", n=400)
    out = tmp_path / "student"
    argv = [
        sys.executable,
        "-m",
        "kd.cli",
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
        "6",
        "--batch-size",
        "4",
        "--freeze-layers",
        "1",
        "--checkpoint-every",
        "5",
        "--device",
        "cpu",
    ]
    env = os.environ | {"KD_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = out / "checkpoint" / "meta.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if meta.exists() and json.loads(meta.read_text())["step"] >= 10:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; give it more work"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(meta.read_text())["step"]
    assert not (out / "metrics.json").exists()

    done = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed from {out / 'checkpoint'} at step {killed_at}" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == metrics["total_steps"]
    history = json.loads((out / "history.json").read_text())
    assert history[0]["step"] == killed_at + 1
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
