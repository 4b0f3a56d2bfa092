"""bench/gpu_check.py runs to the end on the CPU (--dry-run) and writes the fields the README
documents, so the one GPU session that gets to run it is not spent finding its bugs."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Every field the README's "The GPU check" section documents, by section of the JSON.
FIELDS = {
    None: {"schema", "dry_run", "started", "environment", "models", "throughput", "recipe"},
    "environment": {
        "python",
        "torch",
        "transformers",
        "sentence_transformers",
        "cuda_available",
        "cuda_version",
        "devices",
        "bf16_supported",
        "nccl_available",
        "gloo_available",
        "cpu_count",
        "device",
    },
    "models": {"teacher", "student", "data", "dev_set"},
    "throughput": {"batch_size", "kd", "sentence_transformers", "speedup", "seconds"},
    "recipe": {
        "preset",
        "steps",
        "batch_size",
        "train_seconds",
        "items_per_s",
        "peak_gpu_gib",
        "peak_rss_gb",
        "dev",
        "seconds",
    },
}
TRAINER = {"steps", "train_seconds", "items_per_s", "peak_gpu_gib"}
DEV = {"cross_mean_accuracy", "student_mean_accuracy", "english_fidelity", "mse_x100"}


def test_gpu_check_dry_run_writes_every_documented_field(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = os.environ | {"KD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", str(out), "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f"gpu_check={out}"
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["schema"] == 1
    assert FIELDS[None] <= report.keys() and "total_seconds" in report
    for section, keys in FIELDS.items():
        if section is not None:
            assert "skipped" not in report[section], report[section]
            assert keys <= report[section].keys(), (section, keys - report[section].keys())
    for trainer in ("kd", "sentence_transformers"):
        assert report["throughput"][trainer].keys() >= TRAINER
        assert report["throughput"][trainer]["items_per_s"] > 0
    assert report["recipe"]["steps"] == 8  # the fixed length of the dry run
    for model in ("untrained", "distilled"):
        assert report["recipe"]["dev"][model].keys() >= DEV
    # Distillation moved the student towards the teacher, even in 8 tiny steps.
    dev = report["recipe"]["dev"]
    assert dev["distilled"]["mse_x100"] < dev["untrained"]["mse_x100"]


def test_the_readme_documents_every_field():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The GPU check", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_0-9]+)`", section))
    every = set().union(*FIELDS.values(), TRAINER, DEV) - {None}
    assert every <= named, sorted(every - named)
    assert "not yet measured on a GPU" in readme
