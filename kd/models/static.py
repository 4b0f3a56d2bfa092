"""Static students: a table of token vectors in the teacher's space, no transformer at query time.

A static student embeds a sentence as the mean of its tokens' vectors, normalised: one table
look-up a token, so it encodes hundreds of times faster than the transformer student it is made
from, at a cost in quality that ``bench/static_student.py`` measures. The folder it is saved in is
a plain sentence-transformers one (``StaticEmbedding`` then ``Normalize``): ``SentenceTransformer
(dir).encode(texts)`` gives its vectors without kd.

:func:`build_static` (``kd export --static``) makes one from a model (by default the distilled
student) and the data that model was distilled on, in two steps:

1. the start, model2vec's idea: each kept token alone (between the tokenizer's special tokens)
   goes through the source model; its sentence vector, already in the teacher's space when the
   source is a distilled student, is the token's vector, less the part every token shares
   (their mean, weighted by how often the training items use each token), which would otherwise
   pull every sentence towards one direction;
2. the fit, tokenlearn's idea: the table is fitted so that the mean of a training sentence's token
   vectors comes close to the teacher's vector of that sentence (of its English side, for a
   translation), a ridge regression towards the start, solved by conjugate gradients. The
   translations come first among the items fitted on: they are what places a language's tokens
   in the teacher's space, and a run's data is mostly English.

Why not the model2vec package itself: its distillation needs the ``model2vec[distill]`` extra,
which pins ``transformers<5.4`` (and with it older ``tokenizers`` and ``huggingface_hub``); kd
needs transformers 5.24, and pip would downgrade it. Sentence-transformers' ``StaticEmbedding``
is the format and the runtime here, so nothing of ours runs at query time.

The vocabulary: ``vocab="seen"`` keeps the tokens of the training items, every token of one
character, and the special tokens, and rewrites the tokenizer to those (WordLevel, WordPiece and
Unigram tokenizers): a text seen in training is split exactly as before (checked on a sample and
recorded in :data:`MANIFEST`); another may be split into shorter pieces. For e5's 250,002-token
vocabulary this is most of the folder's size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from tokenizers import Tokenizer
from torch import nn

from kd.config import StaticSettings, TrainConfig
from kd.data.dataset import read_dataset
from kd.io import atomic_directory
from kd.models.encoder import (
    MAX_TEXT_CHARS,
    Encoder,
    _check_text,
    _load_sentence_transformer,
    pick_device,
    prepare_torch,
)
from kd.models.registry import is_static

log = logging.getLogger("kd")

MANIFEST = "kd_static.json"
"""What a static folder was built from and how (source, teacher, rows, vocabulary, fit)."""

TOKEN_BATCH = 512  # tokens a forward pass of the source model embeds, each alone


class StaticEncoder(nn.Module):
    """A static model with :class:`~kd.models.encoder.Encoder`'s reading surface (``encode``,
    ``dim``, ``fingerprint``, ``token_counts``), so kd's evaluation, search and app take it.

    It has no window: every token counts (:attr:`max_seq_length` is kd's text cut).
    """

    def __init__(self, name: str, st, device: str = "cpu") -> None:
        super().__init__()
        from sentence_transformers.models import Normalize, StaticEmbedding  # see encoder.py

        modules = list(st)
        if not isinstance(modules[0], StaticEmbedding) or not all(
            isinstance(m, Normalize) for m in modules[1:]
        ):
            kinds = ", ".join(type(m).__name__ for m in modules)
            raise ValueError(f"{name}: static: StaticEmbedding [+ Normalize], not {kinds}")
        self.name = name
        self.st = st.float()  # an fp16 table is stored small and computed in float32
        self.tokenizer = modules[0].tokenizer  # a tokenizers.Tokenizer
        self.dim = int(modules[0].embedding_dim)
        self.max_seq_length = MAX_TEXT_CHARS
        self.prefix = ""
        self.device_name = device

    @classmethod
    def load(cls, name: str, device: str = "cpu") -> StaticEncoder:
        if not is_static(name):
            raise ValueError(f"{name}: not a static model (its first module is no StaticEmbedding)")
        return cls(name, _load_sentence_transformer(name, device), device)

    def fingerprint(self) -> str:
        """A short hash of the table (caches of this model's vectors are keyed by it)."""
        h = hashlib.sha256(b"static:" + self.name.encode())
        for key, tensor in sorted(self.st.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            h.update(key.encode())
            h.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    @torch.inference_mode()
    def encode(
        self,
        texts: list[str],
        batch_size: int = 64,
        max_length: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        precision: str = "auto",
    ) -> np.ndarray:
        """Embed sentences: ``np.ndarray (n, dim)`` float32, as plain sentence-transformers does.

        ``max_length`` and ``precision`` are accepted for :class:`Encoder`'s callers and ignored:
        a static model has no window and computes a mean in float32.
        """
        texts = [_check_text(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        step = max(1024, batch_size)  # a static batch costs little: fewer, larger calls
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            vecs = self.st.encode(
                chunk, batch_size=step, convert_to_numpy=True, show_progress_bar=False
            )
            out[start : start + len(chunk)] = vecs
            if progress:
                progress(start + len(chunk), len(texts))
        return out


def load_encoder(
    name: str, device: str = "cpu", load_base: Callable[[str, str], Encoder] | None = None
) -> Encoder | StaticEncoder:
    """The one loader of an evaluated or searched model: a :class:`StaticEncoder` for a static
    folder, an :class:`~kd.models.encoder.Encoder` (a delta included, its base from
    ``load_base`` as :meth:`Encoder.load` says) otherwise."""
    if is_static(name):
        return StaticEncoder.load(name, device)
    return Encoder.load(name, device, load_base=load_base)


# ---- building ----------------------------------------------------------------------------------
@dataclass
class StaticBuild:
    """What :func:`build_static` wrote."""

    out: Path
    vocab: int  # rows of the table
    full_vocab: int  # the source tokenizer's vocabulary
    rows: int  # training items the table was fitted on
    dim: int
    bytes: int  # the folder's size on disk
    seconds: float
    fit: dict  # mean cosine to the teacher on held-out items, before and after the fit

    def describe(self) -> str:
        held = self.fit.get("heldout_cosine", {})
        fit = (
            f"; held-out cosine to the teacher {held['start']:.3f} -> {held['fitted']:.3f}"
            if held
            else ""
        )
        return (
            f"static student written to {self.out}: {self.vocab:,} of {self.full_vocab:,} "
            f"tokens x {self.dim}, {self.bytes / 2**20:.1f} MiB, fitted on {self.rows:,} items"
            f"{fit}; SentenceTransformer('{self.out}') loads it"
        )


def _run_config(
    model: str,
    teacher: str | None,
    data: list[str] | None,
    english: list[str] | None,
    out: Path,
    pairs: int = 0,
) -> tuple[TrainConfig, dict]:
    """The data and teacher a static build uses: the source run's ``kd_config.json`` (the same
    data the student was distilled on), with ``teacher``/``data``/``english`` replacing it, and
    ``pairs`` translations a language (0: all that ``--data`` sources hold; a run that read the
    default source keeps its own number, since 0 there reads none)."""
    raw: dict = {}
    config = Path(model).expanduser() / "kd_config.json"
    if config.is_file():
        try:
            raw = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = {}
    if not isinstance(raw, dict):
        raw = {}
    cfg = TrainConfig.from_dict(raw) if raw else None
    if cfg is None:
        if not teacher:
            raise ValueError(
                f"{model} names no teacher (no kd_config.json); give --teacher, the model whose "
                "space the static student should share"
            )
        cfg = TrainConfig(out=str(out), teacher=teacher, student=model, data=list(data or []))
    changes: dict = {"out": str(out)}
    if teacher:
        changes["teacher"] = teacher
    if data:
        changes["data"] = list(data)
    if english:
        changes["english"] = list(english)
    if pairs or changes.get("data", cfg.data):
        changes["max_pairs"] = pairs
    return replace(cfg, **changes), raw


def _sample(texts: list[str], target: np.ndarray, langs: list[str], rows: int, seed: int):
    """``rows`` of the training items, in a random order: the translations first, up to two
    thirds of ``rows`` (more when there are too few English sentences), English sentences filling
    the rest; each kind drawn at random. Returns texts, targets and whether each is English."""
    rng = np.random.default_rng(seed)
    english = np.array([lang == "en" for lang in langs], dtype=bool)
    own, other = rng.permutation(np.flatnonzero(english)), rng.permutation(np.flatnonzero(~english))
    n_other = min(len(other), max(rows - len(own), 2 * rows // 3))
    n_own = min(len(own), rows - n_other)
    order = rng.permutation(np.concatenate([other[:n_other], own[:n_own]]))
    return [texts[i] for i in order], target[order], english[order]


def _bare(token: str) -> str:
    for mark in ("▁", "##", "Ġ"):
        if token.startswith(mark) and len(token) > len(mark):
            return token[len(mark) :]
    return token


def _kept_ids(backend, ids: list[list[int]], vocab: str, specials: list[int]) -> np.ndarray:
    """The token ids the table keeps, ascending: all, or those seen + one-character + special."""
    size = backend.get_vocab_size()
    if vocab == "all":
        return np.arange(size)
    keep = {i for row in ids for i in row}
    keep.update(specials)
    keep.update(i for tok, i in backend.get_vocab().items() if len(_bare(tok)) <= 1)
    return np.array(sorted(i for i in keep if 0 <= i < size))


def _remap_specials(node, new_id: dict[int, int]):
    """Rewrite token ids inside a post-processor's JSON (TemplateProcessing ``ids`` lists, the
    ``[token, id]`` pairs of Bert/Roberta processors) to the cut vocabulary's ids."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "ids" and isinstance(value, list):
                out[key] = [new_id.get(i, i) for i in value]
            elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:
                out[key] = [value[0], new_id.get(value[1], value[1])]
            else:
                out[key] = _remap_specials(value, new_id)
        return out
    if isinstance(node, list):
        return [_remap_specials(v, new_id) for v in node]
    return node


def cut_tokenizer(backend, keep: np.ndarray):
    """A copy of a ``tokenizers.Tokenizer`` whose vocabulary holds only the ids ``keep``
    (ascending), renumbered 0..len(keep)-1 in the same order; None for a tokenizer model this
    cannot cut (BPE: its merges name the tokens they make).

    Keeping every token a text was split into keeps that split: WordPiece takes the longest
    piece in the vocabulary, Unigram the most likely split among the pieces, and both choices
    were already among the kept tokens.
    """
    spec = json.loads(backend.to_str())
    model = spec["model"]
    new_id = {int(old): new for new, old in enumerate(keep)}
    kind = model.get("type")
    if kind == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in keep]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    elif kind in ("WordPiece", "WordLevel"):
        by_id = {i: tok for tok, i in model["vocab"].items()}
        model["vocab"] = {by_id[int(old)]: new for new, old in enumerate(keep)}
    else:
        return None
    for added in spec.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]
    spec["post_processor"] = _remap_specials(spec.get("post_processor"), new_id)
    return Tokenizer.from_str(json.dumps(spec))


def _special_frame(backend) -> tuple[list[int], list[int]]:
    """The special-token ids the tokenizer puts before and after one text (``<s>``, ``</s>``
    for e5; ``[CLS]``, ``[SEP]`` for BERT), read off an encoding with and without them."""
    body = backend.encode("a", add_special_tokens=False).ids
    full = backend.encode("a", add_special_tokens=True).ids
    for at in range(len(full) - len(body) + 1):
        if full[at : at + len(body)] == body:
            return full[:at], full[at + len(body) :]
    return [], []


@torch.inference_mode()
def token_vectors(source: Encoder, keep: np.ndarray, status: Callable[[str], None]) -> np.ndarray:
    """Each kept token alone, between the tokenizer's special tokens, through the source model
    (its mean pooling, head and normalisation): ``(len(keep), dim)`` float32."""
    before, after = _special_frame(source.tokenizer.backend_tokenizer)
    rows = [[*before, int(i), *after] for i in keep]
    out = np.zeros((len(keep), source.dim), dtype=np.float32)
    source.eval()
    started = time.perf_counter()
    for start in range(0, len(rows), TOKEN_BATCH):
        ids = torch.tensor(rows[start : start + TOKEN_BATCH], device=source.device_name)
        mask = torch.ones_like(ids)
        out[start : start + len(ids)] = (
            source({"input_ids": ids, "attention_mask": mask}).float().cpu().numpy()
        )
        if time.perf_counter() - started > 30 and start // TOKEN_BATCH % 20 == 0:
            status(f"token vectors: {start + len(ids):,} of {len(rows):,}")
    return out


def mean_matrix(ids: list[list[int]], width: int) -> sparse.csr_matrix:
    """The sparse ``(len(ids), width)`` matrix whose product with a table is each row's mean
    token vector (what ``StaticEmbedding`` computes)."""
    rows = np.repeat(np.arange(len(ids)), [len(r) for r in ids])
    cols = np.fromiter((i for r in ids for i in r), dtype=np.int64, count=len(rows))
    data = np.repeat([1.0 / max(len(r), 1) for r in ids], [len(r) for r in ids]).astype(np.float32)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(ids), width), dtype=np.float32)


def fit_table(
    a: sparse.csr_matrix, y: np.ndarray, start: np.ndarray, ridge: float, iterations: int
) -> np.ndarray:
    """Ridge regression of the table towards ``start``: ``argmin_W |A W - Y|^2 + ridge |W -
    start|^2``, by conjugate gradients on its normal equations, every column at once.

    A token no training item holds keeps its start exactly.
    """
    at = a.T.tocsr()

    def op(x: np.ndarray) -> np.ndarray:
        return at @ (a @ x) + ridge * x

    b = at @ y + ridge * start
    x = start.astype(np.float32).copy()
    r = b - op(x)
    p = r.copy()
    rs = (r * r).sum(0)
    floor = 1e-10 * max(float((b * b).sum(0).max()), 1e-30)
    for _ in range(iterations):
        if float(rs.max()) <= floor:
            break
        ap = op(p)
        alpha = rs / np.maximum((p * ap).sum(0), 1e-30)
        x += alpha * p
        r -= alpha * ap
        rs_new = (r * r).sum(0)
        p = r + (rs_new / np.maximum(rs, 1e-30)) * p
        rs = rs_new
    return x


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(((a * b).sum(1) / np.maximum(na, 1e-12)).mean())


def build_static(
    model: str,
    out: str | Path,
    *,
    teacher: str | None = None,
    data: list[str] | None = None,
    english: list[str] | None = None,
    settings: StaticSettings | None = None,
    device: str = "auto",
    status: Callable[[str], None] | None = None,
    start_out: str | Path | None = None,
) -> StaticBuild:
    """``kd export --static``: write a static student of ``model`` to ``out``.

    ``model`` is the source of the start (a distilled student, whose vectors already lie in the
    teacher's space; any kd model works); the fit uses the source run's data and teacher
    (``kd_config.json``) unless ``teacher``/``data``/``english`` are given. ``start_out``:
    also write the start (before the fit) there, to measure what the fit buys.
    """
    settings = settings or StaticSettings()
    say = status or (lambda message: None)
    started = time.perf_counter()
    out = Path(out).expanduser()
    src = Path(model).expanduser()
    if src.exists() and out.exists() and src.resolve() == out.resolve():
        raise ValueError("--out must be a new folder, not the model being exported")
    cfg, raw = _run_config(model, teacher, data, english, out, settings.pairs)
    device = pick_device(device)
    prepare_torch(device)
    source = Encoder.load(model, device)
    # A copy without padding or truncation: the split StaticEmbedding makes of a whole text.
    backend = Tokenizer.from_str(source.tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    dataset = read_dataset(cfg)
    texts, target, is_english = _sample(
        dataset.texts, dataset.target, dataset.langs, settings.rows, cfg.seed
    )
    say(
        f"{len(texts):,} training items: {int((~is_english).sum()):,} translations, "
        f"{int(is_english.sum()):,} English ({len(set(target.tolist())):,} English targets)"
    )
    ids = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    keep = _kept_ids(backend, ids, settings.vocab, list(source.tokenizer.all_special_ids))
    say(f"token vectors of {len(keep):,} tokens through {model}")
    start = token_vectors(source, keep, say)
    del source
    say(f"teacher vectors from {cfg.teacher}")
    needed = np.unique(target)
    teacher_model = Encoder.load(cfg.teacher, device)
    vecs = teacher_model.encode([dataset.english[i] for i in needed])
    del teacher_model
    y = vecs[np.searchsorted(needed, target)]
    new_id = np.full(backend.get_vocab_size(), -1, dtype=np.int64)
    new_id[keep] = np.arange(len(keep))
    ids = [[int(new_id[i]) for i in row] for row in ids]
    a = mean_matrix(ids, len(keep))
    used = np.asarray(a.getnnz(axis=1) > 0)
    held = np.zeros(len(ids), dtype=bool)
    held[: max(1, len(ids) // 20)] = True  # the sample is shuffled: its first 5% stay out
    train = used & ~held
    a_train, y_train = a[train], y[train]
    # The part every token vector shares (the special tokens around each token alone, e5's
    # anisotropy), weighted by use: left in, it pulls every sentence towards one direction.
    uses = np.asarray(a_train.sum(axis=0)).ravel()
    shared = (uses[:, None] * start).sum(0) / max(float(uses.sum()), 1e-12)
    start -= shared
    # The start's scale, matched to the teacher's vectors in one least-squares number: the
    # ridge pulls towards it, so a start too short or long would bias every rare token.
    pred = a_train @ start
    scale = float((pred * y_train).sum() / max(float((pred * pred).sum()), 1e-12))
    start *= scale
    say(f"fitting {len(keep):,} token vectors to {int(train.sum()):,} items")
    table = fit_table(a_train, y_train, start, settings.ridge, settings.iterations)
    test = used & held
    fit = {
        "ridge": settings.ridge,
        "iterations": settings.iterations,
        "start_scale": scale,
        "shared_part_norm": float(np.linalg.norm(shared)),
        "translations": int((~is_english & train).sum()),
        "english_items": int((is_english & train).sum()),
        "heldout_items": int(test.sum()),
    }
    if test.any():
        held_y, held_fit = y[test], a[test] @ table  # the held-out items' vectors, once
        fit["heldout_cosine"] = {
            "start": _cosine(a[test] @ start, held_y),
            "fitted": _cosine(held_fit, held_y),
        }
        held_english = is_english[test]
        for kind, mask in (("translations", ~held_english), ("english", held_english)):
            if mask.any():
                fit["heldout_cosine"][kind] = _cosine(held_fit[mask], held_y[mask])
    tokenizer = backend if settings.vocab == "all" else cut_tokenizer(backend, keep)
    if tokenizer is None:  # a BPE tokenizer: the whole table, rows as they are
        log.warning("this tokenizer's vocabulary cannot be cut: the static table keeps it all")
        full = np.zeros((backend.get_vocab_size(), 2, table.shape[1]), dtype=np.float32)
        full[keep, 0], full[keep, 1] = table, start
        table, start = full[:, 0], full[:, 1]
        tokenizer, keep = backend, np.arange(backend.get_vocab_size())
    same = _same_split(backend, tokenizer, keep, texts[:2000])
    manifest = {
        "source": str(model),
        "teacher": cfg.teacher,
        "data": cfg.data,
        "english": cfg.english,
        "rows": int(train.sum()),
        "vocab": int(len(keep)),
        "full_vocab": int(backend.get_vocab_size()),
        "vocab_rule": settings.vocab,
        "dtype": settings.dtype,
        "same_split": same,
        "fit": fit,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _save(tokenizer, table, out, settings.dtype, manifest, raw or cfg.to_dict())
    if start_out is not None:
        start_manifest = {**manifest, "fit": {**fit, "iterations": 0, "start_of": str(out)}}
        _save(tokenizer, start, Path(start_out), settings.dtype, start_manifest, raw or {})
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return StaticBuild(
        out,
        len(keep),
        backend.get_vocab_size(),
        int(train.sum()),
        table.shape[1],
        size,
        time.perf_counter() - started,
        fit,
    )


def _same_split(backend, tokenizer, keep: np.ndarray, texts: list[str]) -> float:
    """Share of ``texts`` the cut tokenizer splits exactly as the source one (1.0 expected)."""
    if not texts:
        return 1.0
    new_id = dict(zip(keep.tolist(), range(len(keep)), strict=True))
    old = backend.encode_batch(texts, add_special_tokens=False)
    new = tokenizer.encode_batch(texts, add_special_tokens=False)
    same = sum([new_id.get(i, -1) for i in o.ids] == n.ids for o, n in zip(old, new, strict=True))
    return same / len(texts)


def _save(tokenizer, table: np.ndarray, out: Path, dtype: str, manifest: dict, run: dict) -> None:
    from sentence_transformers import SentenceTransformer  # see encoder.py
    from sentence_transformers.models import Normalize, StaticEmbedding

    weights = torch.from_numpy(table.astype(np.float16 if dtype == "fp16" else np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = SentenceTransformer(
            modules=[StaticEmbedding(tokenizer, embedding_weights=weights), Normalize()],
            device="cpu",
        )
    # The run's config travels along: it names the teacher whose space the vectors share
    # (a search index made by the teacher takes this model's queries, kd.search.index).
    run = {**run, "static_from": manifest["source"]}
    with atomic_directory(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st.save(str(tmp), safe_serialization=True)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        (tmp / "kd_config.json").write_text(json.dumps(run, indent=2), encoding="utf-8")
