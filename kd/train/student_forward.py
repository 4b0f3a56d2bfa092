"""Running the student during training, with its frozen bottom layers computed only once.

Fine-tuning a 12-layer student on two CPU cores is compute-bound: every step pays a forward and a
backward pass through every layer. Freezing the bottom ``K`` layers keeps the student's
multilingual alignment where it is built (the lower layers) and lets the top layers move towards
the teacher; better still, a frozen layer's output never changes, so it is computed once per
sentence and cached (:class:`FrozenPrefixCache`). Each later step then runs only the top
``L - K`` layers forward and backward. With K = 6 of 12 layers an epoch costs about a third of a
full fine-tuning epoch, and the cache costs half of one forward pass.

With ``freeze_layers=0`` (or a model whose layers kd cannot address) :class:`FullForward` runs the
whole transformer each step; only the word-embedding matrix stays frozen (96M of
multilingual-e5-small's 118M parameters, mostly rows of tokens a batch never sees).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from kd.models.encoder import Encoder

log = logging.getLogger("kd")
Progress = Callable[[int, int], None]


def layer_stack(model: nn.Module) -> tuple[nn.Module, nn.ModuleList] | None:
    """``(embeddings, layers)`` of a BERT-like encoder, or ``None`` when it has another shape."""
    emb = getattr(model, "embeddings", None)
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if emb is None or not isinstance(layers, nn.ModuleList):
        return None
    return emb, layers


def _attention_mask(model: nn.Module, hidden: torch.Tensor, mask: torch.Tensor):
    # transformers is imported when a model runs, not with this module: see
    # kd.models.encoder.quiet_transformers, which sets what huggingface_hub reads at import.
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask)


def run_layers(model: nn.Module, layers, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply a slice of transformer layers: (B, T, H) -> (B, T, H)."""
    am = _attention_mask(model, hidden, mask)
    for layer in layers:
        out = layer(hidden, am)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def trainable_parameters(encoder: Encoder, freeze_layers: int) -> list[nn.Parameter]:
    """Freeze the word embeddings and the bottom ``freeze_layers`` layers; return the rest."""
    for p in encoder.parameters():
        p.requires_grad = False
    stack = layer_stack(encoder.transformer)
    if stack is None:
        train = [p for n, p in encoder.transformer.named_parameters() if "word_embeddings" not in n]
    else:
        emb, layers = stack
        k = min(freeze_layers, len(layers))
        train = [p for layer in layers[k:] for p in layer.parameters()]
        if k == 0:
            train += [p for n, p in emb.named_parameters() if "word_embeddings" not in n]
    for p in train:
        p.requires_grad = True
    return train


class FullForward:
    """Tokenize once, then run the whole student on each batch."""

    def __init__(self, encoder: Encoder, texts: list[str], max_length: int) -> None:
        self.encoder = encoder
        enc = encoder.tokenizer(
            [encoder.prefix + t for t in texts], truncation=True, max_length=max_length
        )
        self.ids = [torch.tensor(x) for x in enc["input_ids"]]
        self.pad_id = encoder.tokenizer.pad_token_id or 0

    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids])

    def embed(self, idx: np.ndarray) -> torch.Tensor:
        """Student vectors (B, D) with gradients, for items ``idx``."""
        seqs = [self.ids[i] for i in idx]
        longest = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), longest), self.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)  # (B, T)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = s
            mask[row, : len(s)] = 1
        dev = self.encoder.device_name
        return self.encoder({"input_ids": ids.to(dev), "attention_mask": mask.to(dev)})


class FrozenPrefixCache:
    """Outputs of the student's frozen bottom ``k`` layers, computed once, then only the top runs.

    The cache is one flat (total_tokens, H) tensor plus offsets: no padding is stored. With
    ``dtype=torch.bfloat16`` (training in bf16) it takes half the memory: 65k everyday items
    of ~34 tokens are 1.7 GB instead of 3.4 GB.
    """

    def __init__(
        self,
        encoder: Encoder,
        texts: list[str],
        k: int,
        max_length: int,
        batch_size: int = 64,
        progress: Progress | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self._bind(encoder, k)
        chunks: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                batch = encoder.tokenize([texts[i] for i in idx], max_length)
                hidden = self.bottom_forward(batch)  # (B, T, H)
                for row, i in enumerate(idx):
                    n = int(batch["attention_mask"][row].sum())
                    chunks[i] = hidden[row, :n].to(dtype, copy=True)
                if progress:
                    progress(min(start + batch_size, len(texts)), len(texts))
        lengths = torch.tensor([c.shape[0] for c in chunks])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        self.states = torch.cat(chunks) if chunks else torch.empty(0)  # (total_tokens, H)

    @classmethod
    def from_states(
        cls, encoder: Encoder, k: int, states: torch.Tensor, offsets: torch.Tensor
    ) -> FrozenPrefixCache:
        """A cache from ``states`` and ``offsets`` saved earlier (same student, same ``k``)."""
        cache = cls.__new__(cls)
        cache._bind(encoder, k)
        cache.states, cache.offsets = states, offsets
        return cache

    def _bind(self, encoder: Encoder, k: int) -> None:
        """Split the student's layers into the frozen bottom ``k`` and the trained top."""
        stack = layer_stack(encoder.transformer)
        if stack is None:
            raise ValueError("this student's layers cannot be addressed; use --freeze-layers 0")
        self.encoder, self.k = encoder, k
        self.embeddings, layers = stack
        self.bottom, self.top = layers[:k], layers[k:]

    def bottom_forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings and the frozen layers: token ids -> (B, T, H)."""
        model = self.encoder.transformer
        hidden = self.embeddings(input_ids=batch["input_ids"])
        return run_layers(model, self.bottom, hidden, batch["attention_mask"])

    def lengths(self) -> np.ndarray:
        return (self.offsets[1:] - self.offsets[:-1]).numpy()

    def item_states(self, i: int) -> torch.Tensor:
        """The cached states of item ``i``: (n_i, H). (:class:`kd.train.disk_cache.DiskPrefixCache`
        reads them from disk instead.)"""
        return self.states[self.offsets[i] : self.offsets[i + 1]]

    def embed(self, idx: np.ndarray) -> torch.Tensor:
        """Student vectors (B, D) with gradients through the top layers and the head."""
        rows = [self.item_states(int(i)) for i in idx]
        longest = max(r.shape[0] for r in rows)
        dim = rows[0].shape[1]
        device = torch.device(self.encoder.device_name)
        # bf16 states feed bf16 compute as they are; fp32 compute widens them while copying.
        autocasting = torch.is_autocast_enabled(device.type)
        dtype = rows[0].dtype if autocasting else torch.float32
        hidden = torch.zeros((len(idx), longest, dim), dtype=dtype, device=device)  # (B, T, H)
        mask = torch.zeros((len(idx), longest), dtype=torch.long, device=device)
        for row, r in enumerate(rows):
            hidden[row, : r.shape[0]] = r
            mask[row, : r.shape[0]] = 1
        hidden = run_layers(self.encoder.transformer, self.top, hidden, mask)  # (B, T, H)
        return self.encoder.pool_and_project(hidden, mask)


def embed_in_batches(
    runner: FullForward | FrozenPrefixCache, idx: np.ndarray, batch_size: int = 128
) -> np.ndarray:
    """Vectors of items ``idx``, in that order, without gradients: (len(idx), D) float32.

    Items are run in batches of similar length, so little padding is computed.
    """
    order = np.argsort(runner.lengths()[idx])
    out = None
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            pos = order[start : start + batch_size]
            vecs = runner.embed(idx[pos]).float().cpu().numpy()
            if out is None:
                out = np.empty((len(idx), vecs.shape[1]), dtype=np.float32)
            out[pos] = vecs
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def make_runner(
    encoder: Encoder,
    texts: list[str],
    freeze_layers: int,
    max_length: int,
    progress: Progress | None = None,
    dtype: torch.dtype = torch.float32,
) -> FullForward | FrozenPrefixCache:
    """The cheapest correct way to run this student on these texts during training.

    ``dtype`` is what the frozen-layer cache stores (bf16 halves its memory).
    """
    stack = layer_stack(encoder.transformer)
    if freeze_layers > 0 and stack is not None:
        k = min(freeze_layers, len(stack[1]))
        return FrozenPrefixCache(encoder, texts, k, max_length, progress=progress, dtype=dtype)
    if freeze_layers > 0:
        log.info("student layers not addressable: training the whole transformer instead")
    return FullForward(encoder, texts, max_length)
