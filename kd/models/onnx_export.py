"""A student in ONNX form: the folder sentence-transformers' ONNX back end loads, and an encoder
that runs kd's no-grad passes on ONNX Runtime, in fp32 or with dynamic int8 weights.

Only the transformer becomes an ONNX graph (``input_ids``, ``attention_mask`` ->
``last_hidden_state``), as sentence-transformers' own ONNX export has it: pooling, the linear
head and the normalisation stay the small modules of the folder, so the exported folder is the
full student with an ``onnx/`` folder beside its safetensors:

- ``onnx/model.onnx``: fp32, the same vectors as PyTorch up to rounding;
- ``onnx/model_qint8.onnx`` (``--int8``): ONNX Runtime's dynamic quantisation, int8 weights per
  output channel (reduced range, which AVX2 CPUs without VNNI need to avoid overflow), int8
  activations computed per batch; about a quarter of the size;
- ``onnx/check.json``: the cosine of each form's vectors to the PyTorch student's on
  :data:`PROBE_LANGS` sentences of kd's everyday set, measured at export.

``sentence_transformers.SentenceTransformer(folder, backend="onnx")`` loads ``model.onnx``;
``model_kwargs={"file_name": "onnx/model_qint8.onnx"}`` picks the int8 one (that back end needs
``pip install sentence-transformers[onnx]``, whose optimum-onnx wants transformers < 4.58).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kd.models.encoder import Encoder

log = logging.getLogger("kd")

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"
CHECK_FILE = "check.json"
PROBE_LANGS = ("de", "es", "fr", "ja", "zh", "ar", "ru", "tr")
PROBE_PER_LANG = 25
OPSET = 17


def require_onnx() -> None:
    """One clear line where ONNX Runtime or onnx is missing (both are kd dependencies; a trimmed
    install may lack them)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ValueError(
            f"ONNX export needs the onnx and onnxruntime packages ({err.name} is missing): "
            "pip install onnx onnxruntime"
        ) from None


class _LastHiddenState(nn.Module):
    """The transformer as sentence-transformers' ONNX back end runs it: ids and mask in, the
    token states out (it pools them itself)."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.transformer(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state


def export_transformer(encoder: Encoder, path: str | Path) -> Path:
    """Write ``encoder``'s transformer as one fp32 ONNX graph with dynamic batch and length."""
    require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = encoder.training
    encoder.eval().to("cpu")
    sample = encoder.tokenize(["A first sentence.", "A second, slightly longer sentence."])
    sample = {k: v.to("cpu") for k, v in sample.items()}
    dynamic = {0: "batch", 1: "sequence"}
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the exporter's notes on traced control flow
            torch.onnx.export(
                _LastHiddenState(encoder.transformer),
                (sample["input_ids"], sample["attention_mask"]),
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    "input_ids": dynamic,
                    "attention_mask": dynamic,
                    "last_hidden_state": dynamic,
                },
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        encoder.to(encoder.device_name).train(was_training)
    return path


ACTIVATIONS = {"Erf", "Gelu", "FastGelu", "BiasGelu", "Tanh", "Relu"}


def after_activation(model) -> list[str]:
    """The MatMul nodes fed by an activation (GELU's ``Erf`` a few ops back): each
    feed-forward block's down-projection, whose inputs have the widest range of the network.

    Measured on the pre-built student (400 everyday sentences, 9 languages): int8 everywhere
    keeps a mean cosine of 0.988 to fp32 (smallest 0.950); these 12 MatMuls left in fp32, 0.996
    (smallest 0.984). Leaving the last two layers instead gave 0.989, the embeddings 0.988.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        seen, frontier = 0, [node.input[0]]
        while frontier and seen < 6:
            parent = producer.get(frontier.pop())
            seen += 1
            if parent is None:
                continue
            if parent.op_type in ACTIVATIONS:
                found.append(node.name)
                break
            if parent.op_type in ("Mul", "Add", "Div", "Cast"):
                frontier.extend(parent.input)
    return found


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """ONNX Runtime's dynamic int8 quantisation of ``src``, written to ``dst``: int8 weights
    per output channel with the reduced range CPUs without VNNI need, activations quantised per
    batch, and the feed-forward down-projections kept in fp32 (:func:`after_activation`)."""
    require_onnx()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = after_activation(onnx.load(str(src), load_external_data=False))
    logging.getLogger("root").setLevel(logging.ERROR)  # its advice to pre-process first
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        nodes_to_exclude=keep,
    )
    return Path(dst)


def cpu_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime session on the CPU as kd runs its graphs: ``threads`` (0: torch's count)
    intra-op threads that do not spin between runs (spinning threads burn the cores between
    batches, which a shared 2-core server needs), quiet logging."""
    require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """:class:`kd.models.encoder.Encoder`'s ``encode`` on ONNX Runtime: the same tokenisation,
    length-sorted batches, pooling, head and normalisation; only the transformer runs in the
    graph at ``path``. ``form`` (``onnx-fp32``, ``onnx-int8``) joins the fingerprint, so vectors
    cached from one form are never read as another's."""

    def __init__(self, encoder: Encoder, path: str | Path, form: str, threads: int = 0) -> None:
        self.session = cpu_session(path, threads)
        self.encoder, self.form, self.path = encoder, form, Path(path)
        self.name, self.dim, self.prefix = encoder.name, encoder.dim, encoder.prefix
        self.max_seq_length = encoder.max_seq_length
        self.device_name = "cpu"

    def fingerprint(self) -> str:
        return f"{self.encoder.fingerprint()}-{self.form}"

    def token_counts(self, texts: list[str]) -> list[int]:
        return self.encoder.token_counts(texts)

    def _run(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {k: batch[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask")}
        (states,) = self.session.run(["last_hidden_state"], feed)
        with torch.inference_mode():
            head = self.encoder.to("cpu")
            return head.pool_and_project(torch.from_numpy(states), batch["attention_mask"])

    def encode(
        self,
        texts: list[str],
        batch_size: int = 64,
        max_length: int | None = None,
        progress=None,
        precision: str = "auto",
    ) -> np.ndarray:
        """Embed sentences like :meth:`Encoder.encode` (``precision`` is the graph's: ignored)."""
        del precision
        return self.encoder.encode_batches(texts, self._run, batch_size, max_length, progress)


@dataclass
class Exported:
    """What ``kd export --as onnx`` wrote and measured."""

    out: Path
    files: dict[str, int]  # relative path -> bytes
    cosine: dict[str, dict[str, float]]  # form -> {"min", "mean"} against PyTorch
    n_probe: int

    def describe(self) -> str:
        parts = []
        for rel, size in self.files.items():
            form = "int8" if rel.endswith(INT8_FILE) else "fp32"
            cos = self.cosine.get(form, {})
            parts.append(
                f"{rel} ({size / 2**20:.1f} MB, cosine to PyTorch mean {cos.get('mean', 0):.4f}"
                f" min {cos.get('min', 0):.4f})"
            )
        int8 = f", model_kwargs={{'file_name': '{ONNX_DIR}/{INT8_FILE}'}}"
        return (
            f"wrote {self.out}: the sentence-transformers student with {'; '.join(parts)} on "
            f"{self.n_probe} everyday sentences in {len(PROBE_LANGS)} languages. Load it with "
            f"SentenceTransformer('{self.out}', backend='onnx'"
            + (int8 if "int8" in self.cosine else "")
            + ")"
        )


def probe_sentences() -> list[str]:
    """Everyday sentences in several scripts (kd's own set, shipped with it) to check a form."""
    from kd.data.pairs import read_tsv
    from kd.data.sources import EVERYDAY_DIR

    texts: list[str] = []
    for lang in PROBE_LANGS:
        pairs = read_tsv(EVERYDAY_DIR / f"{lang}.tsv")[:PROBE_PER_LANG]
        texts += [p.other for p in pairs] + [p.en for p in pairs]
    return texts


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean and smallest cosine between matching rows of ``a`` and ``b``."""
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = (na * nb).sum(1)
    return {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}


def export_onnx(student: Encoder, out: str | Path, int8: bool = False) -> Exported:
    """Write ``student`` as a sentence-transformers folder with ``onnx/model.onnx`` (and, with
    ``int8``, ``onnx/model_qint8.onnx``), each checked against PyTorch on everyday sentences."""
    require_onnx()
    out = Path(out)
    started = time.perf_counter()
    student.save(out)
    onnx_dir = out / ONNX_DIR
    fp32 = export_transformer(student, onnx_dir / FP32_FILE)
    paths = {"fp32": fp32}
    if int8:
        paths["int8"] = quantize_int8(fp32, onnx_dir / INT8_FILE)
    texts = probe_sentences()
    reference = student.encode(texts, precision="fp32")
    measured = {
        form: cosines(reference, OnnxEncoder(student, path, f"onnx-{form}").encode(texts))
        for form, path in paths.items()
    }
    record = {
        "probe": f"{len(texts)} sentences of kd's everyday set ({', '.join(PROBE_LANGS)} and en)",
        "cosine_to_pytorch": measured,
        "export_s": round(time.perf_counter() - started, 1),
    }
    (onnx_dir / CHECK_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    files = {str(p.relative_to(out)): p.stat().st_size for p in paths.values()}
    return Exported(out, files, measured, len(texts))
