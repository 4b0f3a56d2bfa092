"""The one configuration of a distillation run, shared by the CLI, the app and the library."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields

from kd.langs import DEV_LANGS, parse_langs
from kd.models import DEFAULT_STUDENT, DEFAULT_TEACHER, PRECISIONS

LOSSES = ("mse", "kl", "cos")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Everything that decides a distillation run; validated on construction.

    The defaults are sized so that ``kd distill`` on the offline models finishes in about ten
    minutes on two CPU cores.

    Example:
        >>> cfg = TrainConfig(out="student", langs=["de", "fr"], epochs=1)
        >>> cfg.loss
        'mse'
    """

    out: str = "student"
    teacher: str = DEFAULT_TEACHER
    student: str = DEFAULT_STUDENT
    langs: list[str] = field(default_factory=lambda: list(DEV_LANGS))
    # Training pairs per language: drawn from the --data sources when given (0: all of them),
    # else from the default source (KD_DATA, an everyday Hub set, or the software catalogs;
    # 0: none, English rows only).
    max_pairs: int = 1000
    # Everyday English sentences with no translation: they pull student(en) to teacher(en).
    english_rows: int = 12000
    # Parallel-data sources: files, folders, hf:OWNER/NAME[:CONFIG], gettext (kd.sources).
    data: list[str] = field(default_factory=list)
    epochs: int = 2
    batch_size: int = 32
    lr: float = 3e-4
    head_lr: float = 1e-3
    warmup: float = 0.1
    weight_decay: float = 0.01
    loss: str = "mse"
    # Temperature of the kl loss and of the ranking term.
    temperature: float = 0.05
    # Weight of the ranking term (kd.losses.rank_loss); 0: the paper's squared error alone.
    rank_weight: float = 0.5
    # Bottom transformer layers kept frozen; their outputs are computed once and cached.
    freeze_layers: int = 10
    max_seq_length: int = 48
    eval_pairs: int = 100
    # STS folder (stsb-multi format) scored before and after training; default: $KD_STS.
    sts: str = field(default_factory=lambda: os.environ.get("KD_STS", ""))
    sts_pairs: int = 100
    eval_every: int = 0
    checkpoint_every: int = 100
    device: str = "auto"
    # Compute precision of training: auto = bf16 on CUDA and on CPUs with AMX, else fp32.
    precision: str = "auto"
    seed: int = 0
    max_steps: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        self.langs = parse_langs(self.langs)
        self.data = [str(p) for p in self.data]
        checks = [
            (self.max_pairs >= 0, "--max-pairs must be 0 or more"),
            (self.english_rows >= 0, "--english-rows must be 0 or more"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (1 <= self.batch_size <= 4096, "--batch-size must be between 1 and 4096"),
            (_positive(self.lr) and self.lr < 1, "--lr must be a positive number below 1"),
            (
                _positive(self.head_lr) and self.head_lr < 1,
                "--head-lr must be a positive number below 1",
            ),
            (0 <= self.warmup < 1, "--warmup is a fraction of the steps, from 0 to below 1"),
            (0 <= self.weight_decay < 1, "--weight-decay must be from 0 to below 1"),
            (self.loss in LOSSES, f"--loss must be one of {', '.join(LOSSES)}"),
            (_positive(self.temperature), "--temperature must be a positive number"),
            (
                isinstance(self.rank_weight, int | float) and 0 <= self.rank_weight <= 100,
                "--rank-weight must be from 0 (off) to 100",
            ),
            (self.freeze_layers >= 0, "--freeze-layers must be 0 or more"),
            (8 <= self.max_seq_length <= 512, "--max-seq-length must be between 8 and 512"),
            (self.eval_pairs >= 0, "--eval-pairs must be 0 or more"),
            (self.sts_pairs >= 2, "--sts-pairs must be at least 2"),
            (self.eval_every >= 0, "--eval-every must be 0 (only at the end) or more"),
            (self.checkpoint_every >= 0, "--checkpoint-every must be 0 (never) or more"),
            (self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}"),
            (
                self.precision in PRECISIONS,
                f"--precision must be one of {', '.join(PRECISIONS)}",
            ),
            (self.max_steps >= 0, "--max-steps must be 0 (no cap) or more"),
            (bool(str(self.out).strip()), "--out must name a directory"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.max_pairs == 0 and self.english_rows == 0 and not self.data:
            raise ValueError(
                "no training data: raise --max-pairs or --english-rows, or give --data"
            )

    def to_dict(self) -> dict:
        """A JSON-ready copy (written next to the saved student as ``kd_config.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    # Settings that may differ between a run and its resumption without changing the result.
    RESUME_FREE = (
        "device",
        "precision",
        "eval_every",
        "checkpoint_every",
        "out",
        "resume",
        "sts",
        "sts_pairs",
    )


def _positive(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0
