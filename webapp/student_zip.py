"""A visitor's student as a file: the zip the Distill tab offers, and the zip brought back.

The app's runs save their students as deltas (:mod:`kd.models.delta`: the tensors training changed,
a few MB, with a README on loading them), so the Distill tab hands each finished student out as
a small zip, and takes such a zip back later (:func:`load_student_zip`), unpacked by
:func:`kd.models.archive.safe_extract` into the visitor's own folder. ``kd export`` turns a delta
into the full folder ``SentenceTransformer`` loads. A zip of a full sentence-transformers folder is
still taken when it fits the upload cap. Each visitor holds one student: :func:`replace_student`
deletes the previous one's files.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from webapp import settings
from webapp.session import Visitor, user_error, without_server_paths
from webapp.uploads import check_upload


def zip_student(out: Path) -> str:
    """The student folder as a zip (stored, not deflated: float weights barely compress).

    It unpacks into a folder of the run's name (``run-1/``), as the README inside says, and its
    JSON files (config, metrics, manifest) carry no path of the server's: the run's ``out`` is
    its folder name, and the visitors' work folder and the upload folder are dropped from any
    other path (:func:`webapp.session.without_server_paths`)."""
    path = out.parent / f"kd-student-{out.name}.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in sorted(out.rglob("*")):
            if not file.is_file():
                continue
            name = f"{out.name}/{file.relative_to(out).as_posix()}"
            if file.suffix == ".json":
                text = file.read_text(encoding="utf-8").replace(
                    json.dumps(str(out)), json.dumps(out.name)
                )
                zf.writestr(name, without_server_paths(text))
            else:
                zf.write(file, name)
    return str(path)


def replace_student(visitor: Visitor, folder: Path, zip_path: str | None) -> None:
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


MARKERS = ("kd_delta.json", "modules.json")  # a delta, or a sentence-transformers folder


def student_root(folder: Path) -> Path:
    """The student's folder in an unpacked zip: the top, or its single subfolder."""
    if any((folder / m).is_file() for m in MARKERS):
        return folder
    children = [p for p in folder.iterdir() if p.is_dir()]
    if len(children) == 1 and any((children[0] / m).is_file() for m in MARKERS):
        return children[0]
    raise ValueError(
        "the zip holds no student (no kd_delta.json or modules.json at its top); upload the "
        "zip the Distill tab offered, or a zip of a delta made by `kd export --as delta`"
    )


def check_delta_base(folder: Path, visitor: Visitor | None) -> None:
    """A delta names the model it applies to; that name passes the page's model check, as a
    typed one would (a manifest must not make the server load what the page refuses)."""
    from kd.models.delta import is_delta, read_manifest
    from webapp.model_cache import checked_model

    if not is_delta(folder):
        return
    base = read_manifest(folder)["base"]
    try:
        checked_model(base, visitor)
    except ValueError:
        from kd.models.registry import OFFLINE_MODELS
        from webapp.guards import shown_model

        raise ValueError(
            f"the zip's delta applies to '{shown_model(base)}', a model this server does not "
            f"load; it takes deltas over {', '.join(OFFLINE_MODELS)}"
        ) from None


SLACK_ELEMENTS = 2**20
"""Parameters a zip's config may declare beyond what its weights hold (a pooler a checkpoint
leaves out, as the converted multilingual-e5 does): more is a model the weights do not make."""
MODULES = {"Transformer", "Pooling", "Dense", "Normalize"}
"""The sentence-transformers modules kd's encoder is built of (kd.models.encoder.Encoder)."""


def _stored_elements(folder: Path) -> int | None:
    """Numbers held by the safetensors files in ``folder`` (read from their headers), or None
    when it holds none (the loader then says the weights are missing)."""
    import math

    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        try:
            with safe_open(str(file), "pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                    total += math.prod(handle.get_slice(key).get_shape())
        except (SafetensorError, OSError, ValueError):
            raise ValueError(f"{file.name} is not a readable safetensors file") from None
    return total


def _declared_elements(kind: str, folder: Path) -> int:
    """Parameters the config of one module declares, counted without building it (a
    transformer on PyTorch's ``meta`` device, a dense layer from its two sizes)."""
    config_file = folder / "config.json"
    if kind == "Dense":
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
            n_in, n_out = int(config["in_features"]), int(config["out_features"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError("its Dense module has no readable config.json") from None
        return n_in * n_out + n_out
    import torch
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModel.from_config(config, trust_remote_code=False)
    except Exception as err:  # an unknown model type, a config that does not add up
        raise ValueError(
            f"its config.json does not describe a model kd loads ({type(err).__name__})"
        ) from None
    return sum(p.numel() for p in model.parameters())


def check_declared_size(folder: Path) -> None:
    """A full sentence-transformers folder from a zip declares, in its config files, no bigger
    model than its weights hold; checked before anything is built.

    The zip's caps bound its files, not the model its ``config.json`` declares: a 2 x 2 weights
    file under a config of a 300,000-word vocabulary made the server build (and cache) a
    randomly initialised model of 1.1 GB. A delta is not checked here: its model is its base,
    an offline model (:func:`check_delta_base`).

    Raises:
        ValueError: a module kd does not load, an unreadable config or weights file, or a
            declared model larger than its weights.
    """
    from kd.models.delta import is_delta

    if is_delta(folder):
        return
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        parts = [(str(m["type"]).rsplit(".", 1)[-1], str(m.get("path", ""))) for m in modules]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError("the zip's modules.json is unreadable") from None
    declared = stored = 0
    for kind, sub in parts:
        if kind not in MODULES:
            raise ValueError(
                f"the zip's modules.json names a module kd does not load ({kind[:60]}); a "
                f"student is made of {', '.join(sorted(MODULES))}"
            )
        if kind not in ("Transformer", "Dense"):
            continue
        where = (folder / sub).resolve()
        if folder.resolve() not in (where, *where.parents):
            raise ValueError("the zip's modules.json points outside the zip")
        held = _stored_elements(where)
        if held is None:
            continue  # no weights: the loader's own message says so
        declared += _declared_elements(kind, where)
        stored += held
    if declared > stored + SLACK_ELEMENTS:
        raise ValueError(
            f"the zip's config declares a model of {declared / 1e6:,.1f} M parameters, but its "
            f"weights hold {stored / 1e6:,.1f} M; upload the zip the Distill tab offered"
        )


def _drop_empty_workdir(visitor: Visitor) -> None:
    """A refused zip leaves no empty work folder behind (the visitor has no run yet)."""
    workdir = Path(visitor.workdir) if visitor.workdir else None
    if workdir is not None and workdir.is_dir() and not any(workdir.iterdir()):
        workdir.rmdir()
        visitor.workdir = None


def load_student_zip(path: str | None, visitor: Visitor | None):
    """The Distill tab's "bring back a student" upload: unpack, check and load a student zip.

    The zip is unpacked by :func:`kd.models.archive.safe_extract` (no absolute or ``..`` paths, no
    links, no pickle files, capped members and size) into the visitor's own work folder, and
    the model is loaded once to prove that it works. It then becomes the visitor's student, as
    if they had just distilled it: Compare and Aligned spaces show it.

    Returns:
        (status Markdown, visitor).

    Raises:
        gr.Error: no file, the wrong type or size, an unsafe or damaged zip, a model that does
            not load, or a distillation of this visitor's still running.
    """
    from kd.models.archive import safe_extract
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
            hint="upload the .zip the Distill tab offered (kd-student-run-N.zip, a delta of a "
            "few MB); for a full student folder, `kd export --model FOLDER --as delta --out D` "
            "makes the delta to zip",
        )
        out = visitor.new_run_dir()
        safe_extract(
            file,
            out,
            max_members=settings.MAX_STUDENT_ZIP_MEMBERS,
            max_bytes=settings.MAX_STUDENT_UNZIPPED_BYTES,
        )
        folder = student_root(out)
        check_delta_base(folder, visitor)
        check_declared_size(folder)
        try:
            encoder = get_encoder(str(folder), public=False)
        except ValueError:
            raise
        except Exception as err:  # a damaged weights file, an unknown architecture
            raise ValueError(f"the zip's model does not load ({type(err).__name__})") from None
    except ValueError as err:
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
        _drop_empty_workdir(visitor)
        message = str(err)
        if out is not None:  # the server's folder names mean nothing to the visitor
            message = message.replace(str(out.resolve()), "the zip").replace(str(out), "the zip")
        raise user_error(message) from None
    replace_student(visitor, folder, None)
    visitor.teacher = _run_teacher(folder)
    return (
        f"**Student loaded** from {Path(path).name} ({encoder.dim}-d vectors). It is yours "
        "for this session: the Compare, Aligned-spaces and Search tabs now show it as "
        "*student, distilled*.",
        visitor,
    )


def _run_teacher(folder: Path) -> str | None:
    """The teacher a brought-back student learnt from (its ``kd_config.json``), when that is
    one of the offline models (a path from another machine means nothing here)."""
    import json

    from kd.models.registry import OFFLINE_MODELS

    try:
        teacher = json.loads((folder / "kd_config.json").read_text(encoding="utf-8")).get("teacher")
    except (OSError, ValueError, AttributeError):
        return None
    return teacher if teacher in OFFLINE_MODELS else None
