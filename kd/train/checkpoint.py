"""Training checkpoints: safetensors for tensors, JSON for the rest, written atomically.

A checkpoint holds what a killed run needs to continue exactly: the trainable weights, the
optimizer's moments, the step counter, the learning-rate schedule position and the random state.
Nothing is pickled, so a checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kd.io import atomic_directory, atomic_write_json

TENSORS = "state.safetensors"
META = "meta.json"


def save_checkpoint(
    path: str | Path,
    params: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    meta: dict,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint directory atomically (a crash leaves the previous one whole).

    ``extra``: more tensors to keep (under ``extra/NAME``; :func:`read_extra` gives them back),
    e.g. each rank's random state in a run of several processes.
    """
    tensors = {f"param/{k}": v.detach().cpu().contiguous() for k, v in params.items()}
    for name, value in (extra or {}).items():
        tensors[f"extra/{name}"] = value.detach().cpu().contiguous()
    opt_state = optimizer.state_dict()
    for pid, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt/{pid}/{key}"] = (
                    value.detach().cpu().reshape(-1)
                    if value.dim() == 0
                    else value.detach().cpu().contiguous()
                )
    # The random state, so that dropout after a resume draws what the uninterrupted run drew.
    tensors["rng/cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    groups = [
        {k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
        for g in opt_state["param_groups"]
    ]
    with atomic_directory(path) as tmp:
        save_file(tensors, str(tmp / TENSORS))
        atomic_write_json(tmp / META, {**meta, "optimizer_groups": groups})


def load_checkpoint(
    path: str | Path, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer
) -> dict:
    """Restore weights and optimizer state in place; return the saved metadata.

    Raises:
        ValueError: the checkpoint is missing, truncated, corrupt or from a different model.
    """
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        tensors = load_file(str(path / TENSORS))
    except FileNotFoundError:
        raise ValueError(f"{path}: no checkpoint to resume from (run without --resume)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as err:
        raise ValueError(
            f"{path}: the checkpoint is corrupt or truncated ({str(err)[:120]}); "
            "delete it and start again without --resume"
        ) from None
    for name, tensor in params.items():
        saved = tensors.get(f"param/{name}")
        if saved is None or saved.shape != tensor.shape:
            raise ValueError(f"{path}: checkpoint does not match this model (parameter {name})")
        with torch.no_grad():
            tensor.copy_(saved.to(tensor.device))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = value.reshape(()) if name == "step" else value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_groups"]})
    except (KeyError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: optimizer state does not match this run ({err})") from None
    if "rng/cpu" in tensors:
        torch.set_rng_state(tensors["rng/cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    return meta


def read_extra(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``extra`` tensors a checkpoint was saved with (``{}`` for none)."""
    try:
        tensors = load_file(str(Path(path) / TENSORS))
    except (FileNotFoundError, SafetensorError, OSError):
        return {}
    return {k.removeprefix("extra/"): v for k, v in tensors.items() if k.startswith("extra/")}
