"""A student as the tensors distillation changed: the delta format.

The default recipe freezes the student's word embeddings and its bottom layers, so a distilled
multilingual-e5-small differs from the packaged one only in its top layers and its linear head:
a few percent of its weights. A *delta* folder stores just those:

    kd_delta.json        the manifest: the base model's name and weight fingerprint, the
                         tensors file's size and SHA-256, the encoder's settings, the run's
                         config and metrics
    delta.safetensors    the changed transformer tensors (``transformer.<key>``) and the head
                         (``head.weight``, ``head.bias``), float32 or float16

next to the run's ``metrics.json``, ``history.json`` and ``watch.npz``. :func:`load_delta`
rebuilds the full student from the base model and checks the fingerprint first, so a delta
applied to a different base is one clear error, not a wrong model. ``Encoder.load`` does this
for any folder holding a manifest, so ``kd eval``, ``kd plot``, ``kd search`` and the app take a
delta wherever they take a model; ``kd export`` (:mod:`kd.models.export`) writes the full
sentence-transformers folder.

Tensors are read with ``safetensors`` only (no pickle can run), after their checksum matches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch import nn

from kd.io import atomic_directory, atomic_write_text
from kd.models.archive import PICKLE_SUFFIXES

MANIFEST = "kd_delta.json"
TENSORS = "delta.safetensors"
FORMAT = "kd-delta/1"
DTYPES = {"float32": torch.float32, "float16": torch.float16}
FULL_ABOVE = 0.5
"""A delta holding more than this share of the weights is saved in full instead."""
KEEP = ("kd_config.json", "metrics.json", "history.json", "watch.npz", "eval_tatoeba.json")
"""Files of a run folder that travel with the student, whichever way it is saved."""


class DeltaError(ValueError):
    """A delta that cannot be applied: its message is one line for the user."""


@dataclass(frozen=True)
class Saved:
    """What :func:`save_student` wrote: ``kind`` is ``"delta"`` or ``"full"``."""

    kind: str
    path: Path
    bytes: int
    full_bytes: int
    reason: str = ""

    def describe(self) -> str:
        """One line for the run log: which form was written, and how large."""
        if self.kind == "full":
            why = f" ({self.reason})" if self.reason else ""
            return f"saved the full student ({_mb(self.bytes)}) to {self.path}{why}"
        share = 100 * self.bytes / max(self.full_bytes, 1)
        return (
            f"saved the student as a delta ({_mb(self.bytes)}, {share:.1f}% of the full "
            f"{_mb(self.full_bytes)}) to {self.path}; `kd export --model {self.path} --out DIR` "
            "writes the full sentence-transformers folder"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def is_delta(path: str | Path) -> bool:
    """Whether ``path`` is a delta folder (it holds a :data:`MANIFEST`)."""
    try:
        return (Path(path).expanduser() / MANIFEST).is_file()
    except OSError:
        return False


def weight_bytes(encoder) -> int:
    """Bytes of the weights an encoder's full save writes: the transformer and the head."""
    tensors = list(encoder.transformer.state_dict().values())
    if encoder.head is not None:
        tensors += list(encoder.head.state_dict().values())
    return sum(t.numel() * t.element_size() for t in tensors)


def _is_pooler(key: str) -> bool:
    """The transformer's pooler: mean pooling never uses it (see ``Encoder.fingerprint``)."""
    return key.startswith("pooler.") or ".pooler." in key


def weights_fingerprint(encoder) -> str:
    """A short hash of an encoder's weights alone (not its name, unlike ``Encoder.fingerprint``):
    the same base model, however its path is spelled, has the same one. A strided sample of
    every tensor is hashed, so it costs milliseconds; the pooler is left out, as there."""
    h = hashlib.sha256(FORMAT.encode())
    for key, tensor in sorted(encoder.transformer.state_dict().items()):
        if tensor.numel() and not _is_pooler(key):
            flat = tensor.detach().reshape(-1)
            h.update(key.encode() + str(tuple(tensor.shape)).encode())
            h.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ---- writing -------------------------------------------------------------------------------------
def delta_tensors(student, changed: set[str], dtype: str = "float32") -> dict[str, torch.Tensor]:
    """The tensors a delta stores: the transformer's ``changed`` keys and the head."""
    if dtype not in DTYPES:
        raise DeltaError(f"unknown delta dtype '{dtype}'; use {', '.join(DTYPES)}")
    state = student.transformer.state_dict()
    missing = sorted(changed - state.keys())
    if missing:
        raise DeltaError(f"the student has no tensor {missing[0]}")
    out = {f"transformer.{k}": state[k] for k in sorted(changed)}
    if student.head is not None:
        out |= {f"head.{k}": v for k, v in student.head.state_dict().items()}
    cast = DTYPES[dtype]
    return {k: v.detach().to("cpu", cast).contiguous() for k, v in out.items()}


def trained_keys(student) -> set[str]:
    """Transformer keys of the parameters that trained (``requires_grad``)."""
    return {n for n, p in student.transformer.named_parameters() if p.requires_grad}


def changed_keys(student, base) -> set[str]:
    """Transformer keys whose tensors differ between a student and its base model."""
    mine, theirs = student.transformer.state_dict(), base.transformer.state_dict()
    if mine.keys() != theirs.keys():
        extra = sorted(mine.keys() ^ theirs.keys())
        raise DeltaError(
            f"'{student.name}' is not built on '{base.name}': their tensors differ in name "
            f"({extra[0]})"
        )
    return {
        k
        for k, v in mine.items()
        if not _is_pooler(k) and (v.shape != theirs[k].shape or not torch.equal(v, theirs[k]))
    }


def write_delta(
    student,
    out: str | Path,
    base: str,
    base_fingerprint: str,
    changed: set[str],
    dtype: str = "float32",
    extra: dict | None = None,
    keep: tuple[str, ...] = (),
) -> Path:
    """Write ``student`` as a delta over ``base`` into the folder ``out`` (atomically)."""
    tensors = delta_tensors(student, changed, dtype)
    with atomic_directory(out, keep=keep) as tmp:
        save_file(tensors, str(tmp / TENSORS), metadata={"format": FORMAT})
        blob = (tmp / TENSORS).read_bytes()
        manifest = {
            "format": FORMAT,
            "base": base,
            "base_fingerprint": base_fingerprint,
            "tensors": {
                "file": TENSORS,
                "bytes": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
                "dtype": dtype,
                "count": len(tensors),
            },
            "encoder": {
                "max_seq_length": int(student.max_seq_length),
                "normalize": bool(student.normalize),
                "prefix": student.prefix,
                "dim": int(student.dim),
            },
        } | (extra or {})
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
        atomic_write_text(tmp / "README.md", _readme(base, Path(out).name))
    return Path(out)


def _readme(base: str, name: str) -> str:
    return (
        f"# A distilled student, stored as a delta over {base}\n\n"
        "This folder holds only the tensors distillation changed (`delta.safetensors`) and a\n"
        "manifest (`kd_delta.json`) naming the base model and its weight fingerprint. kd\n"
        "rebuilds the full student from the base, after checking the fingerprint:\n\n"
        "```bash\n"
        f"kd eval --model {name}                 # kd loads a delta wherever it takes a model\n"
        f"kd export --model {name} --out full    # a complete sentence-transformers folder\n"
        "```\n\n"
        "```python\n"
        "from sentence_transformers import SentenceTransformer\n"
        "SentenceTransformer('full').encode(['Wie spät ist es?'])\n"
        "```\n"
    )


def save_student(
    student,
    out: str | Path,
    form: str,
    base: str,
    base_fingerprint: str,
    changed: set[str],
    extra: dict | None = None,
    keep: tuple[str, ...] = (),
) -> Saved:
    """Save a run's student as ``form`` (``full``, ``delta`` or ``delta-fp16``).

    A delta that would hold more than :data:`FULL_ABOVE` of the weights (a recipe that trains
    nearly everything) is saved in full instead, and :class:`Saved` says why.
    """
    out = Path(out)
    full_bytes = weight_bytes(student)
    reason = ""
    if form != "full":
        dtype = "float16" if form == "delta-fp16" else "float32"
        size = sum(t.numel() * DTYPES[dtype].itemsize for t in _named(student, changed))
        if size <= FULL_ABOVE * full_bytes:
            write_delta(student, out, base, base_fingerprint, changed, dtype, extra, keep)
            return Saved("delta", out, (out / TENSORS).stat().st_size, full_bytes)
        reason = (
            f"the run trained {100 * size / full_bytes:.0f}% of the weights, so a delta "
            "would save little"
        )
    student.save(out, keep=keep)
    size = sum(p.stat().st_size for p in out.rglob("*.safetensors"))
    return Saved("full", out, size, full_bytes, reason)


def _named(student, changed: set[str]) -> list[torch.Tensor]:
    state = student.transformer.state_dict()
    head = list(student.head.state_dict().values()) if student.head is not None else []
    return [state[k] for k in changed if k in state] + head


# ---- reading -------------------------------------------------------------------------------------
def read_manifest(path: str | Path) -> dict:
    """The checked manifest of a delta folder.

    Raises:
        DeltaError: no manifest, unreadable JSON, another format, missing fields, or a pickle
            file in the folder.
    """
    path = Path(path).expanduser()
    where = path.name or str(path)
    pickles = sorted(p.name for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise DeltaError(
            f"delta '{where}' holds a pickle file ({pickles[0]}); kd deltas carry safetensors "
            "only, because a pickle can run code when loaded: refusing to load it"
        )
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeltaError(f"'{where}' is not a kd delta (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DeltaError(
            f"delta '{where}': {MANIFEST} is unreadable ({type(err).__name__})"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise DeltaError(f"delta '{where}': format {got!r} is not {FORMAT!r}")
    try:
        tensors, encoder = manifest["tensors"], manifest["encoder"]
        ok = (
            isinstance(manifest["base"], str)
            and isinstance(manifest["base_fingerprint"], str)
            and tensors["file"] == TENSORS
            and tensors["dtype"] in DTYPES
            and isinstance(tensors["bytes"], int)
            and isinstance(tensors["sha256"], str)
            and int(encoder["max_seq_length"]) > 0
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise DeltaError(f"delta '{where}': {MANIFEST} lacks or garbles a required field")
    return manifest


def read_tensors(path: str | Path, manifest: dict) -> dict[str, torch.Tensor]:
    """The delta's tensors, after their size and checksum match the manifest."""
    path = Path(path).expanduser()
    where = path.name or str(path)
    want = manifest["tensors"]
    try:
        blob = (path / TENSORS).read_bytes()
    except OSError:
        raise DeltaError(f"delta '{where}': {TENSORS} is missing or unreadable") from None
    if len(blob) != want["bytes"]:
        raise DeltaError(
            f"delta '{where}': {TENSORS} is truncated or damaged ({len(blob):,} bytes of "
            f"{want['bytes']:,}); download or copy it again"
        )
    if hashlib.sha256(blob).hexdigest() != want["sha256"]:
        raise DeltaError(
            f"delta '{where}': {TENSORS} does not match its checksum (damaged); copy it again"
        )
    try:
        return load(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise DeltaError(f"delta '{where}': {TENSORS} is not a safetensors file ({err})") from None


def apply_delta(encoder, tensors: dict[str, torch.Tensor], manifest: dict, where: str) -> None:
    """Write a delta's tensors into a base encoder (in place), checking names and shapes."""
    state = encoder.transformer.state_dict()
    head: dict[str, torch.Tensor] = {}
    updates: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.startswith("head."):
            head[key[5:]] = value
            continue
        name = key.removeprefix("transformer.")
        if not key.startswith("transformer.") or name not in state:
            raise DeltaError(f"delta '{where}': tensor {key} has no place in {manifest['base']}")
        if tuple(state[name].shape) != tuple(value.shape):
            raise DeltaError(
                f"delta '{where}': tensor {key} has shape {tuple(value.shape)}, the base "
                f"{tuple(state[name].shape)}"
            )
        updates[name] = value.to(state[name].dtype)
    with torch.no_grad():
        for name, value in updates.items():
            state[name].copy_(value)
        if head:
            if set(head) - {"weight", "bias"} or "weight" not in head:
                raise DeltaError(f"delta '{where}': the head's tensors are incomplete")
            out_dim, in_dim = head["weight"].shape
            if in_dim != encoder.transformer.config.hidden_size:
                raise DeltaError(f"delta '{where}': the head does not fit {manifest['base']}")
            linear = nn.Linear(in_dim, out_dim, bias="bias" in head)
            linear.load_state_dict({k: v.float() for k, v in head.items()})
            encoder.head = linear.to(encoder.device_name)
    settings = manifest["encoder"]
    encoder.max_seq_length = int(settings["max_seq_length"])
    encoder.normalize = bool(settings.get("normalize", True))
    encoder.prefix = str(settings.get("prefix", encoder.prefix))
    encoder.dim = encoder.head.out_features if encoder.head is not None else encoder.dim


def load_delta(
    path: str | Path,
    load_base: Callable[[str, str], nn.Module],
    device: str = "cpu",
    name: str | None = None,
):
    """Rebuild the full student a delta folder describes, on ``device``, from the base that
    ``load_base(name, device)`` loads (``Encoder.load``, which calls this for a delta folder:
    the format knows nothing of how models load).

    Raises:
        DeltaError: a damaged or foreign delta, a base model that does not load here, or a
            base whose weights are not the ones the delta was made from.
    """
    path = Path(path).expanduser()
    where = path.name or str(path)
    manifest = read_manifest(path)
    tensors = read_tensors(path, manifest)
    base = manifest["base"]
    if is_delta(base):
        raise DeltaError(
            f"delta '{where}' names another delta as its base; a base must be a full model"
        )
    try:
        encoder = load_base(base, device)
    except (OSError, ValueError) as err:
        raise DeltaError(
            f"delta '{where}' is built on '{base}', which does not load here: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    found = weights_fingerprint(encoder)
    if found != manifest["base_fingerprint"]:
        raise DeltaError(
            f"delta '{where}' was made from other weights of '{base}' (fingerprint "
            f"{manifest['base_fingerprint']}, here {found}); install the base it names"
        )
    apply_delta(encoder, tensors, manifest, where)
    encoder.name = name or str(path)
    return encoder


__all__ = [
    "DeltaError",
    "MANIFEST",
    "Saved",
    "TENSORS",
    "changed_keys",
    "is_delta",
    "load_delta",
    "read_manifest",
    "save_student",
    "trained_keys",
    "weights_fingerprint",
    "write_delta",
]
