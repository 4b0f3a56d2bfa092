"""Fuzz the text-to-embedding path: any string gives finite vectors of the right shape."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kd.models.encoder import Encoder

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # lone surrogates cannot be UTF-8
    max_size=300,
)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_teacher) -> Encoder:
    return Encoder.load(tiny_teacher)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(TEXT, min_size=1, max_size=6))
def test_any_text_embeds_to_finite_unit_vectors(tiny_encoder, texts):
    vecs = tiny_encoder.encode(texts)
    assert vecs.shape == (len(texts), tiny_encoder.dim)
    assert np.isfinite(vecs).all()
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\u200b\u200c\u200d",
        "\x00\x01\x1f",
        "🐈‍⬛🇯🇵",
        "Ünïcödé مرحبا 你好 שלום",
        "x" * 100_000,
    ],
)
def test_edge_case_texts(tiny_encoder, text):
    vecs = tiny_encoder.encode([text])
    assert vecs.shape == (1, tiny_encoder.dim) and np.isfinite(vecs).all()


def test_non_string_input_is_a_clear_error(tiny_encoder):
    with pytest.raises(ValueError, match="expected a sentence"):
        tiny_encoder.encode([None])  # type: ignore[list-item]
