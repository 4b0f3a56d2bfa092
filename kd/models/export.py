"""``kd export``: a student written as a full sentence-transformers folder or as a delta.

Reads either form (``Encoder.load`` takes both) and writes the other, with the run's config,
metrics and watch set alongside (:data:`kd.models.delta.KEEP`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kd.models.delta import (
    KEEP,
    DeltaError,
    Saved,
    changed_keys,
    is_delta,
    read_manifest,
    save_student,
    weight_bytes,
    weights_fingerprint,
)
from kd.models.encoder import Encoder
from kd.models.onnx_export import Exported, export_onnx, require_onnx


def export(
    model: str, out: str | Path, form: str = "full", base: str | None = None, int8: bool = False
) -> Saved | Exported:
    """``kd export``: write ``model`` (a delta or a full folder) to ``out`` as ``form``.

    ``full`` writes a complete sentence-transformers folder; ``delta``/``delta-fp16`` store the
    tensors that differ from ``base`` (default: the base a delta names, or the ``student`` of
    the run's ``kd_config.json``); ``onnx`` the full folder with its transformer as an ONNX
    graph (``int8``: a quantised one too, :mod:`kd.models.onnx_export`). The run's config,
    metrics and watch set travel along.
    """
    src, out = Path(model).expanduser(), Path(out).expanduser()
    if src.exists() and out.exists() and src.resolve() == out.resolve():
        raise DeltaError("--out must be a new folder, not the model being exported")
    if int8 and form != "onnx":
        raise DeltaError("--int8 goes with --as onnx (ONNX Runtime quantises the graph)")
    if form == "onnx":
        require_onnx()
    student = Encoder.load(model)
    config = _json(src / "kd_config.json")
    if form == "onnx":
        saved = export_onnx(student, out, int8=int8)
    elif form == "full":
        student.save(out)
        saved = Saved(
            "full",
            out,
            sum(p.stat().st_size for p in out.rglob("*.safetensors")),
            weight_bytes(student),
        )
    else:
        base = base or (read_manifest(src)["base"] if is_delta(src) else config.get("student"))
        if not base:
            raise DeltaError(
                f"'{src.name}' names no base model (no kd_config.json); give --base, the model "
                "it was distilled from"
            )
        base_model = Encoder.load(base)
        extra = {"config": config, "metrics": _json(src / "metrics.json")}
        saved = save_student(
            student,
            out,
            form,
            base,
            weights_fingerprint(base_model),
            changed_keys(student, base_model),
            extra={k: v for k, v in extra.items() if v},
        )
    for name in KEEP:
        if (src / name).is_file() and not (out / name).exists():
            shutil.copyfile(src / name, out / name)
    return saved


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
