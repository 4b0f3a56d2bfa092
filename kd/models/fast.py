"""The fastest way this machine encodes with a fixed model, chosen by measuring it.

Passes without gradients (the teacher's vectors, its evaluation, ``kd embed``) can run on
PyTorch (fp32, or bf16 on CUDA and on CPUs with AMX) or on ONNX Runtime (fp32, or int8 weights:
:mod:`kd.models.onnx_export`). Which is fastest depends on the CPU (int8 pays off with VNNI or
AMX, hardly on AVX2 alone), so ``auto`` measures instead of guessing: each candidate encodes the
same probe sentences, the fastest whose vectors keep a mean cosine of at least
:data:`MIN_COSINE` to PyTorch fp32 wins, and only when it beats PyTorch by
:data:`SWITCH_MARGIN` (a tie keeps the exact path). The graphs and the choice are cached per
model fingerprint and CPU, so a machine measures a model once.

A choice's form joins the encoder's fingerprint, so vectors cached one way are never read as
another's.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from kd.io import cache_dir
from kd.models.encoder import Encoder, cpu_has_fast_bf16
from kd.models.registry import FAST_PATHS

log = logging.getLogger("kd")

MIN_COSINE = 0.99
"""The mean cosine to PyTorch fp32 a faster path must keep on the probe sentences."""

SWITCH_MARGIN = 1.10
"""How much faster than PyTorch another path must be to be chosen by ``auto``."""

PROBE_SENTENCES = 128
CHOICE_VERSION = 1
GRAPH_VERSION = 1
"""Bumped when the export or the quantisation recipe changes: older cached graphs are not read."""


@dataclass
class FastChoice:
    """Which path encodes, and what was measured to choose it."""

    path: str  # torch-fp32, torch-bf16, onnx-fp32, onnx-int8
    asked: str  # auto, torch, onnx, int8
    speeds: dict[str, float] = field(default_factory=dict)  # path -> sentences per second
    cosine: dict[str, float] = field(default_factory=dict)  # path -> mean cosine to torch-fp32
    cpu: str = ""

    def describe(self) -> str:
        if not self.speeds:
            return f"{self.path} ({'asked' if self.asked != 'auto' else 'not measured'})"
        base = self.speeds.get("torch-fp32") or 1.0
        parts = [
            f"{p} {s / base:.2f}x" + (f" cos {self.cosine[p]:.4f}" if p in self.cosine else "")
            for p, s in self.speeds.items()
        ]
        return f"{self.path}, measured on this CPU: {', '.join(parts)}"

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    """The CPU's model name and the threads torch uses: a choice holds for these only."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads"


def _graphs_dir(encoder: Encoder) -> Path:
    return cache_dir("onnx", f"{encoder.fingerprint()}-v{GRAPH_VERSION}")


def onnx_graph(encoder: Encoder, int8: bool) -> Path:
    """The encoder's ONNX graph (fp32, or int8) in kd's cache, exported once per fingerprint."""
    from kd.models.onnx_export import FP32_FILE, INT8_FILE, export_transformer, quantize_int8

    folder = _graphs_dir(encoder)
    fp32 = folder / FP32_FILE
    if not fp32.is_file():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            export_transformer(encoder, Path(tmp) / FP32_FILE)
            os.replace(Path(tmp) / FP32_FILE, fp32)
    if not int8:
        return fp32
    quantized = folder / INT8_FILE
    if not quantized.is_file():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            quantize_int8(fp32, Path(tmp) / INT8_FILE)
            os.replace(Path(tmp) / INT8_FILE, quantized)
    return quantized


def encoder_for(encoder: Encoder, path: str):
    """``encoder`` running ``path`` (``torch-fp32`` ... ``onnx-int8``): itself for PyTorch, an
    :class:`kd.models.onnx_export.OnnxEncoder` for ONNX Runtime."""
    if path.startswith("torch"):
        return encoder
    from kd.models.onnx_export import OnnxEncoder

    return OnnxEncoder(encoder, onnx_graph(encoder, path == "onnx-int8"), path)


def _probe() -> list[str]:
    from kd.models.onnx_export import probe_sentences

    texts = probe_sentences()
    step = max(1, len(texts) // PROBE_SENTENCES)
    return texts[::step][:PROBE_SENTENCES]


def _timed(encode, texts: list[str], precision: str) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = encode(texts, precision=precision)
    return time.perf_counter() - started, vectors


def measure(encoder: Encoder, candidates: list[str], rounds: int = 2) -> FastChoice:
    """Encode the probe sentences with each candidate (interleaved rounds, the best time of
    each) and choose as the module says."""
    texts = _probe()
    encoders = {p: encoder_for(encoder, p) for p in candidates}
    precision = {p: ("bf16" if p == "torch-bf16" else "fp32") for p in candidates}
    best: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    for p, enc in encoders.items():  # warm-up: first calls allocate
        enc.encode(texts[:16], precision=precision[p])
    for _ in range(rounds):
        for p, enc in encoders.items():
            seconds, vectors[p] = _timed(enc.encode, texts, precision[p])
            best[p] = min(best.get(p, float("inf")), seconds)
    reference = vectors["torch-fp32"]
    ref = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    cosine, speeds = {}, {}
    for p in candidates:
        v = vectors[p] / np.maximum(np.linalg.norm(vectors[p], axis=1, keepdims=True), 1e-12)
        cosine[p] = round(float((ref * v).sum(1).mean()), 5)
        speeds[p] = round(len(texts) / best[p], 1)
    chosen = "torch-fp32"
    for p in candidates:
        good = cosine[p] >= MIN_COSINE
        if (
            good
            and speeds[p] >= SWITCH_MARGIN * speeds["torch-fp32"]
            and speeds[p] > speeds.get(chosen, 0.0)
        ):
            chosen = p
    return FastChoice(chosen, "auto", speeds, cosine, cpu_name())


def fast_encoder(encoder: Encoder, path: str = "auto"):
    """``(encoder to use, FastChoice)`` for the no-grad passes of ``encoder``.

    ``torch`` keeps PyTorch; ``onnx`` / ``int8`` take that ONNX Runtime path; ``auto`` measures
    on the CPU (cached per model and CPU), and keeps PyTorch on CUDA, where bf16 already is the
    fast path (:func:`kd.models.encoder.encode_precision`).
    """
    if path not in FAST_PATHS:
        raise ValueError(f"unknown fast path '{path}'; use {', '.join(FAST_PATHS)}")
    if path == "torch" or encoder.device_name != "cpu":
        return encoder, FastChoice("torch-fp32" if encoder.device_name == "cpu" else "torch", path)
    from kd.models.onnx_export import require_onnx

    if path in ("onnx", "int8"):
        require_onnx()
        chosen = "onnx-fp32" if path == "onnx" else "onnx-int8"
        return encoder_for(encoder, chosen), FastChoice(chosen, path, cpu=cpu_name())
    try:
        require_onnx()
    except ValueError as err:  # a trimmed install: PyTorch, said once
        log.info("%s; encoding with PyTorch", err)
        return encoder, FastChoice("torch-fp32", path)
    record = _graphs_dir(encoder) / "choice.json"
    cpu = cpu_name()
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved.get("version") == CHOICE_VERSION and saved.get("cpu") == cpu:
            choice = FastChoice(**{k: v for k, v in saved.items() if k != "version"})
            return encoder_for(encoder, choice.path), choice
    except (OSError, ValueError, TypeError):
        pass
    candidates = ["torch-fp32", "onnx-fp32", "onnx-int8"]
    if cpu_has_fast_bf16():
        candidates.insert(1, "torch-bf16")
    choice = measure(encoder, candidates)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": CHOICE_VERSION, **choice.to_dict()}), encoding="utf-8")
    os.replace(tmp, record)
    return encoder_for(encoder, choice.path), choice


def clear_graphs(encoder: Encoder) -> None:
    """Delete the cached graphs and choice of ``encoder`` (tests, a changed CPU)."""
    shutil.rmtree(_graphs_dir(encoder), ignore_errors=True)
