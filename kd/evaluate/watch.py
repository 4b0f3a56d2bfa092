"""A few held-out sentences watched during a run: where the student puts their translations.

The lesson of the method is a movement: translations start where the untrained student puts
them (its own space) and end on the point where the teacher put the English sentence. A
:class:`WatchSet` keeps the student's vectors of a small fixed set of held-out translations
(8 English sentences in every language of the run that has them) at each evaluation of a
distillation, so a figure can replay it (``viz.figures.teacher_space_animation``). It is saved
next to the student as ``watch.npz`` and costs one encoding of ~100 sentences per frame.

No torch here: the encoders are passed in as ``list[str] -> np.ndarray`` functions.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kd.io import atomic_write_bytes

WATCH_FILE = "watch.npz"
Encode = Callable[[list[str]], np.ndarray]


@dataclass
class WatchSet:
    """Held-out English sentences (the teacher's anchors), their translations, and frames.

    ``pair_ids[i]`` is the row of ``english`` that ``texts[i]`` (in ``langs[i]``) translates;
    ``frames[k]`` labels ``vectors[k]``, the student's (n, d) vectors of ``texts`` then.
    """

    english: list[str]
    texts: list[str]
    langs: list[str]
    pair_ids: np.ndarray
    teacher: np.ndarray  # (m, d) the teacher's unit vectors of ``english``
    frames: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)

    def snapshot(self, label: str, encode: Encode) -> np.ndarray | None:
        """Add frame ``label``: the vectors ``encode`` gives the translations now. Skipped (None)
        when they are not in the teacher's dimension (an untrained student of another width
        cannot be drawn in the teacher's space)."""
        vecs = np.asarray(encode(list(self.texts)), dtype=np.float32)  # (n, d)
        if vecs.shape[1] != self.teacher.shape[1]:
            return None
        self.frames.append(label)
        self.vectors.append(vecs)
        return vecs

    def by_frame(self) -> dict[str, np.ndarray]:
        """Frame label -> the student's (n, d) vectors then, in the order they were taken."""
        return dict(zip(self.frames, self.vectors, strict=True))

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/watch.npz`` (plain arrays; loads without pickle)."""
        buf = io.BytesIO()
        np.savez(
            buf,
            english=np.array(self.english, dtype=str),
            texts=np.array(self.texts, dtype=str),
            langs=np.array(self.langs, dtype=str),
            pair_ids=self.pair_ids.astype(np.int64),
            teacher=self.teacher.astype(np.float32),
            frames=np.array(self.frames, dtype=str),
            vectors=np.stack(self.vectors) if self.vectors else np.zeros((0, 0, 0), np.float32),
        )
        path = Path(folder) / WATCH_FILE
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> WatchSet | None:
        """The watch set saved in ``folder``, or None if the run kept none."""
        path = Path(folder) / WATCH_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    english=[str(s) for s in z["english"]],
                    texts=[str(s) for s in z["texts"]],
                    langs=[str(s) for s in z["langs"]],
                    pair_ids=z["pair_ids"],
                    teacher=z["teacher"],
                    frames=[str(s) for s in z["frames"]],
                    vectors=list(z["vectors"]),
                )
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: not a readable watch file ({err})") from None


def watch_set(
    eval_sets: dict[str, tuple[list[str], list[str]]], teacher: Encode, per_lang: int = 8
) -> WatchSet | None:
    """The watch set of a run: the ``per_lang`` held-out English sentences translated into the
    most languages (multi-way sets share them), with every translation of each.

    Example:
        >>> sets = {"de": (["A.", "B."], ["Ein A.", "Ein B."]), "fr": (["B."], ["Un B."])}
        >>> w = watch_set(sets, lambda s: np.eye(len(s), 4, dtype=np.float32), per_lang=1)
        >>> w.english, w.texts, w.langs
        (['B.'], ['Ein B.', 'Un B.'], ['de', 'fr'])
    """
    if not eval_sets or per_lang < 1:
        return None
    by_english: dict[str, dict[str, str]] = {}
    for lang, (english, translations) in eval_sets.items():
        for en, x in zip(english, translations, strict=True):
            by_english.setdefault(en, {}).setdefault(lang, x)
    order = sorted(by_english, key=lambda en: -len(by_english[en]))  # stable: ties keep order
    chosen = order[:per_lang]
    texts, langs, pair_ids = [], [], []
    for i, en in enumerate(chosen):
        for lang, x in by_english[en].items():
            texts.append(x)
            langs.append(lang)
            pair_ids.append(i)
    vecs = np.asarray(teacher(chosen), dtype=np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return WatchSet(chosen, texts, langs, np.array(pair_ids), vecs)
