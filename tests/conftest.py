"""Shared fixtures: tiny random models built offline, so tests never need the real weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TATOEBA_DEV = SHARED / "data" / "tatoeba-dev"
EVERYDAY = SHARED / "data" / "everyday-parallel"

# The default training data, as CI has it: the everyday pairs where ../shared holds them (a
# user's clone has none, and runs without it fall back to the software-message catalogs).
if EVERYDAY.is_dir():
    os.environ.setdefault("KD_DATA", str(EVERYDAY))
# The app measures its shared models' fast paths after loading them (kd.models.fast): a minute
# of CPU for the default models in every fresh cache, which the app tests' isolated caches would
# pay each time. tests/test_fast.py checks that swap with its own setting.
os.environ.setdefault("KD_FAST_PATH", "torch")

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sits",
    "runs",
    "on",
    "mat",
    "house",
    "big",
    "small",
    "red",
    "blue",
    "is",
    "was",
    "and",
    "le",
    "la",
    "chat",
    "chien",
    "est",
    "sur",
    "tapis",
    "maison",
    "grand",
    "petit",
    "rouge",
    "bleu",
    "et",
    "der",
    "die",
    "das",
    "katze",
    "hund",
    "sitzt",
    "auf",
    "matte",
    "haus",
    "gross",
    "klein",
    "rot",
    "blau",
    "und",
    "hello",
    "world",
    "good",
    "morning",
    "night",
    "thank",
    "you",
    "friend",
    "water",
]


def _build_tiny_bert(root: Path, hidden: int = 32, seed: int = 0) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
    )
    raw = root / "hf"
    BertModel(config, add_pooling_layer=False).save_pretrained(raw, safe_serialization=True)
    fast.save_pretrained(raw)
    st = SentenceTransformer(
        modules=[Transformer(str(raw), max_seq_length=64), Pooling(hidden, "mean"), Normalize()],
        device="cpu",
    )
    out = root / "st"
    st.save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random BERT with a WordLevel tokenizer, as a sentence-transformers dir."""
    return str(_build_tiny_bert(tmp_path_factory.mktemp("teacher"), seed=0))


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> str:
    """Another tiny random BERT (different seed) to play the student."""
    return str(_build_tiny_bert(tmp_path_factory.mktemp("student"), seed=1))


@pytest.fixture
def allow_tiny_models(monkeypatch, tiny_teacher, tiny_student) -> None:
    """Let the app load the tiny models: their folders join its allowed model folders through
    ``KD_MODEL_DIRS``, as an operator lists theirs (the app refuses other server paths)."""
    folders = [str(Path(tiny_teacher).parent), str(Path(tiny_student).parent)]
    monkeypatch.setenv("KD_MODEL_DIRS", os.pathsep.join(folders))


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Point kd's cache at a fresh directory for this test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("KD_CACHE", str(path))
    return path
