"""The one configuration of a distillation run, shared by the CLI, the app and the library.

:class:`TrainConfig` owns every run setting: its name, default, limits, help text and page
label (a :class:`Setting` in the field's metadata). The CLI builds ``kd distill``'s options from
it (:func:`kd.cli.build_parser`), the app builds its Distill form from it
(``webapp.distill_form``), and both report the same :class:`ConfigError`: ``--lr must be ...``
on the command line, ``'learning rate' must be ...`` in the page. This module imports no torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace

from kd.langs import DEV_LANGS, parse_langs
from kd.models.registry import DEFAULT_STUDENT, DEFAULT_TEACHER, FAST_PATHS, PRECISIONS

LOSSES = ("mse", "kl", "cos")
HEADS = ("ridge", "plain")
DEVICES = ("auto", "cpu", "cuda")
SAVE_FORMS = ("full", "delta", "delta-fp16")

PRESETS: dict[str, dict] = {
    # About ten minutes on two CPU cores (docs/results.md, "The default run").
    "default": {},
    # Four trainable layers instead of two, two epochs instead of one, 500 pairs a language and
    # up to 90,000 English rows (every row of the sources given; the Debian packages alone hold
    # 44,761). With the default English it measured 0.874 / 0.910 / 0.753 on the dev set against
    # the earlier six-layer long recipe's 0.865 / 0.904 / 0.756 in about a third of the time;
    # with --english default --english news-english/en.txt it made the pre-built student
    # (docs/results.md, "The long recipe"; docs/training.md, "The pre-built student").
    "long": {"max_pairs": 500, "english_rows": 90000, "freeze_layers": 8, "epochs": 2},
    # The app's Distill form: a run a visitor watches in about a minute on a 2-core
    # server (the Learn tab says why these are smaller than the CLI's).
    "app": {
        "max_pairs": 100,
        "english_rows": 1000,
        "epochs": 1,
        "eval_pairs": 50,
        "evals": 3,
        "checkpoint_every": 0,
        "save": "delta",
        "langs": ["de", "fr", "es", "ru", "ja", "zh", "ar"],
    },
    # The GPU recipe (docs/scaling.md; not yet measured on a GPU): the full student
    # trains (all layers, no frozen-layer cache), bf16 autocast, batches of 128, up to 100,000
    # pairs a language (give --data hf:... for the paper's corpora) and every everyday English
    # row, on the streaming path so the corpus may be larger than memory.
    "gpu": {
        "max_pairs": 100000,
        "english_rows": 45000,
        "freeze_layers": 0,
        "epochs": 2,
        "batch_size": 128,
        "lr": 1e-4,
        "precision": "bf16",
        "evals": 4,
        "checkpoint_every": 500,
        "stream": True,
    },
}
"""Named recipes (``kd distill --preset NAME``): the fields each one changes from the defaults."""


@dataclass(frozen=True)
class Setting:
    """What the CLI and the page need to know about one :class:`TrainConfig` field.

    ``low``/``high`` bound numbers (``open_low``: ``low`` itself is refused, as for a learning
    rate); ``server_high`` is the tighter cap the public app puts on a visitor's run (its form
    offers ``low..server_high``); ``choices`` lists the allowed words.
    """

    label: str
    help: str = ""
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    server_high: float | None = None
    choices: tuple[str, ...] = ()

    def rule(self, kind: type) -> str:
        """The allowed values in words, for messages and help: "a whole number from 1 to 5"."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        noun = "a whole number" if kind is int else "a number"
        low, high = _number(self.low), _number(self.high)
        if self.low is None:
            start = noun
        elif self.open_low and self.low == 0:
            start = "a positive whole number" if kind is int else "a positive number"
        elif self.open_low:
            start = f"{noun} above {low}"
        elif self.high is None:
            return f"{noun}, {low} or more"
        else:
            start = f"{noun} from {low}"
        if self.high is None:
            return start
        if self.open_high:
            return f"{start} below {high}" if self.open_low else f"{start} to below {high}"
        return f"{start} up to {high}" if self.open_low else f"{start} to {high}"


def _number(x: float | None) -> str:
    return "" if x is None else (str(int(x)) if float(x).is_integer() else f"{x:g}")


def setting(default=None, *, factory=None, **meta) -> object:
    """A dataclass field carrying its :class:`Setting` (``factory`` for list defaults)."""
    metadata = {"setting": Setting(**meta)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class ConfigError(ValueError):
    """A bad value of one setting. ``str()`` names its CLI flag; :meth:`for_page` its label.

    ``message``, for an error about several settings, is a template with ``{field}``
    placeholders, filled with flags or labels alike.

    Example:
        >>> err = ConfigError("lr", "must be a positive number below 1")
        >>> str(err)
        '--lr must be a positive number below 1'
        >>> err.for_page()
        "'learning rate' must be a positive number below 1"
    """

    def __init__(self, name: str, problem: str = "", *, message: str | None = None) -> None:
        self.name = name
        escaped = problem.replace("{", "{{").replace("}", "}}")
        self.template = message or "{" + name + "} " + escaped
        super().__init__(self.template.format_map({n: flag(n) for n in SETTINGS}))

    def for_page(self) -> str:
        """The message with the form's labels in place of the flags."""
        return self.template.format_map({n: f"'{s.label}'" for n, s in SETTINGS.items()})


def flag(name: str) -> str:
    """The CLI option of a field: ``max_pairs`` -> ``--max-pairs``."""
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    """Everything that decides a distillation run; validated on construction.

    The defaults are sized so that ``kd distill`` on the offline models finishes in about ten
    minutes on two CPU cores; :data:`PRESETS` names other sizes.

    Example:
        >>> cfg = TrainConfig(out="student", langs=["de", "fr"], epochs=1)
        >>> cfg.loss
        'mse'
    """

    out: str = setting("student", label="output folder", help="directory for the student")
    teacher: str = setting(DEFAULT_TEACHER, label="teacher", help="teacher id or directory")
    student: str = setting(DEFAULT_STUDENT, label="student", help="student id or directory")
    langs: list[str] = setting(
        factory=lambda: list(DEV_LANGS), label="languages", help="comma-separated language codes"
    )
    max_pairs: int = setting(
        250,
        label="pairs per language",
        help="training pairs per language (from --data: 0 takes all; from the default source: "
        "0 takes none)",
        low=0,
        server_high=2000,
    )
    english_rows: int = setting(
        45000,
        label="English-only rows",
        help="everyday English sentences without translation: they pull student(en) to teacher(en)",
        low=0,
        server_high=20000,
    )
    english: list[str] = setting(
        factory=list,
        label="English-only text",
        help="where the English-only rows come from: a text file of one sentence a line, a "
        "folder of .txt files, hf:OWNER/NAME[:CONFIG] (a Hub text dataset, streamed), or "
        "wordnet / fortunes / default (both: the Debian packages' everyday sentences); "
        "repeatable: taken in the order given, each shuffled, until --english-rows. "
        "Default: default",
    )
    data: list[str] = setting(
        factory=list,
        label="your own pairs",
        help="parallel data: a .tsv/.jsonl file, a folder of them, hf:OWNER/NAME[:CONFIG] (a "
        "Hub set in the parallel-sentences layout, streamed) or gettext (software messages); "
        "repeatable. Default: $KD_DATA, else an everyday Hub set when the Hub is reachable, "
        "else gettext",
    )
    epochs: int = setting(1, label="epochs", low=1, high=1000, server_high=5)
    batch_size: int = setting(32, label="batch size", low=1, high=4096, server_high=256)
    lr: float = setting(
        3e-4,
        label="learning rate",
        help="learning rate of the student layers",
        low=0,
        high=1,
        open_low=True,
        open_high=True,
    )
    head_lr: float = setting(
        1e-3,
        label="head learning rate",
        help="learning rate of the linear head",
        low=0,
        high=1,
        open_low=True,
        open_high=True,
    )
    head: str = setting(
        "ridge",
        label="linear head",
        help="how the linear head (student -> teacher space) starts: ridge, fitted in closed "
        "form to the teacher's vectors before the first step, so training starts in the "
        "teacher's space; plain, the identity (a random map where the widths differ), so "
        "gradient descent makes the whole journey (on the app's data: 0.82 cross-model after 1 "
        "epoch, 0.98 after 5, where ridge starts at 0.97)",
        choices=HEADS,
    )
    warmup: float = setting(
        0.1,
        label="warm-up",
        help="fraction of the steps spent warming up",
        low=0,
        high=1,
        open_high=True,
    )
    weight_decay: float = setting(0.01, label="weight decay", low=0, high=1, open_high=True)
    loss: str = setting("mse", label="loss", help="distillation loss", choices=LOSSES)
    temperature: float = setting(
        0.05,
        label="temperature",
        help="of --loss kl and of the ranking term",
        low=0,
        high=100,
        open_low=True,
    )
    rank_weight: float = setting(
        0.5,
        label="ranking weight",
        help="weight of the ranking term: each item ranks its English sentence first among the "
        "teacher's training vectors (0: the paper's squared error alone)",
        low=0,
        high=100,
    )
    freeze_layers: int = setting(
        10,
        label="frozen layers",
        help="bottom student layers kept frozen; their outputs are computed once and cached",
        low=0,
        high=48,
    )
    max_seq_length: int = setting(
        48, label="max tokens", help="tokens per sentence in training", low=8, high=512
    )
    eval_pairs: int = setting(
        100,
        label="held-out pairs per language",
        help="held-out pairs per language for the before/after evaluation",
        low=0,
        server_high=500,
    )
    evals: int = setting(
        0,
        label="evaluations during training",
        help="held-out evaluations spread over the run, besides the one at the end "
        "(--eval-every, when set, wins)",
        low=0,
        high=1000,
        server_high=20,
    )
    sts: str = setting(
        factory=lambda: os.environ.get("KD_STS", ""),
        label="STS folder",
        help="STS folder (stsb-multi format) scored before and after training (default: $KD_STS)",
    )
    sts_pairs: int = setting(100, label="STS pairs", help="STS pairs a language to score", low=2)
    eval_every: int = setting(
        0, label="evaluate every", help="evaluate every N steps (0: see --evals)", low=0
    )
    checkpoint_every: int = setting(
        100, label="checkpoint every", help="save a checkpoint every N steps (0: never)", low=0
    )
    save: str = setting(
        "full",
        label="save as",
        help="what OUT receives: the full sentence-transformers folder, or a delta of the "
        "tensors training changed (a few percent of the size; kd loads it like a model and "
        "`kd export` rebuilds the full folder); delta-fp16 stores them in float16",
        choices=SAVE_FORMS,
    )
    device: str = setting("auto", label="device", choices=DEVICES)
    precision: str = setting(
        "auto",
        label="precision",
        help="training compute precision (auto: bf16 on CUDA and on CPUs with AMX, else fp32)",
        choices=PRECISIONS,
    )
    teacher_path: str = setting(
        "auto",
        label="teacher's encoding",
        help="how the teacher encodes, without gradients (auto: the fastest path measured on "
        "this CPU whose vectors keep cosine 0.99 to PyTorch fp32; torch; onnx: ONNX Runtime "
        "fp32; int8: ONNX Runtime, int8 weights)",
        choices=FAST_PATHS,
    )
    seed: int = setting(0, label="seed", low=0)
    max_steps: int = setting(0, label="step cap", help="stop after N steps (0: no cap)", low=0)
    max_minutes: float = setting(
        0.0,
        label="time limit (minutes)",
        help="end the run after this many minutes of wall time from its start, in any phase; "
        "once training has begun the student so far is saved (0: no limit)",
        low=0,
    )
    resume: bool = setting(False, label="resume", help="continue from OUT/checkpoint")
    stream: bool = setting(
        False,
        label="streaming",
        help="the streaming path: data, teacher vectors and frozen-layer states on disk, read "
        "as needed, so memory stays flat however large the corpus (always on under torchrun)",
    )

    def __post_init__(self) -> None:
        self.langs = parse_langs(self.langs)
        self.data = [str(p) for p in self.data]
        self.english = [str(p) for p in self.english]
        for f in fields(self):
            check(f.name, getattr(self, f.name))
        if not str(self.out).strip():
            raise ConfigError("out", "must name a directory")
        if self.max_pairs == 0 and self.english_rows == 0 and not self.data:
            raise ConfigError(
                "max_pairs",
                message="no training data: raise {max_pairs} or {english_rows}, or give {data}",
            )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TrainConfig:
        """The recipe ``name`` (:data:`PRESETS`), with ``overrides`` on top.

        Example:
            >>> TrainConfig.from_preset("long", epochs=1).freeze_layers
            6
        """
        if name not in PRESETS:
            raise ConfigError("preset", f"must be one of {', '.join(PRESETS)}")
        return cls(**(PRESETS[name] | overrides))

    @classmethod
    def from_values(
        cls, values: dict, preset: str = "default", server: bool = False
    ) -> TrainConfig:
        """From loosely typed values (a web form: floats from sliders, None from empty boxes).

        Each value is read as its field's type first (:func:`coerce`), so ``2.5`` pairs and an
        empty learning rate are :class:`ConfigError` for that field, not a crash. ``server``:
        also hold each value to the public server's cap (``Setting.server_high``).
        """
        values = {k: coerce(k, v) for k, v in values.items()}
        if server:  # the core's rule first (the message the CLI gives), then the server's cap
            for name, value in values.items():
                check(name, value)
                check(name, value, server=True)
        return cls.from_preset(preset, **values)

    def steps_per_epoch(self, items: int) -> int:
        """Optimizer steps in one epoch over ``items`` training items."""
        return max(1, math.ceil(items / self.batch_size))

    def eval_interval(self, total_steps: int) -> int:
        """Steps between held-out evaluations in a run of ``total_steps`` (0: only at the end):
        ``eval_every`` when set, else ``evals`` evaluations spread evenly over the run."""
        if self.eval_every:
            return self.eval_every
        if not self.evals or not self.eval_pairs:
            return 0
        return max(1, math.ceil(total_steps / (self.evals + 1)))

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
        "max_minutes",
        "device",
        "precision",
        "eval_every",
        "evals",
        "checkpoint_every",
        "save",
        "out",
        "resume",
        "sts",
        "sts_pairs",
    )


SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(TrainConfig)}
SETTINGS["preset"] = Setting(label="preset", choices=tuple(PRESETS))
KINDS: dict[str, type] = {
    f.name: {"int": int, "float": float, "str": str, "bool": bool}.get(f.type, list)
    for f in fields(TrainConfig)
}
KINDS["preset"] = str


def check(name: str, value, server: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is allowed for field ``name`` (``server``:
    within the public server's cap too)."""
    spec, kind = SETTINGS[name], KINDS[name]
    if server and spec.server_high is not None:
        spec = replace(spec, high=spec.server_high, open_high=False)
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    else:
        ok = True
    if ok and spec.choices:
        ok = value in spec.choices
    if ok and kind in (int, float):
        if spec.low is not None:
            ok = value > spec.low if spec.open_low else value >= spec.low
        if ok and spec.high is not None:
            ok = value < spec.high if spec.open_high else value <= spec.high
    if not ok:
        raise ConfigError(name, f"must be {spec.rule(kind)}, got {value!r}")


def coerce(name: str, value):
    """``value`` read as field ``name``'s type; :class:`ConfigError` if it cannot be."""
    if name not in SETTINGS:
        raise ValueError(f"unknown setting '{name}'")
    kind, spec = KINDS[name], SETTINGS[name]
    if kind not in (int, float):
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ConfigError(name, f"is empty; type {spec.rule(kind)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"must be {spec.rule(kind)}, got {value!r}") from None
    if kind is int:
        if not number.is_integer():
            raise ConfigError(name, f"must be {spec.rule(kind)}, got {value!r}")
        return int(number)
    return number


def form_range(name: str) -> tuple[float, float | None]:
    """The range a public form offers for a numeric field: ``low`` to ``server_high`` (or
    ``high``)."""
    spec = SETTINGS[name]
    high = spec.server_high if spec.server_high is not None else spec.high
    return (spec.low if spec.low is not None else 0), high


STATIC_VOCABS = ("seen", "all")
STATIC_DTYPES = ("fp32", "fp16")


@dataclass(frozen=True)
class StaticSettings:
    """How ``kd export --static`` makes a static student (:mod:`kd.models.static`).

    ``rows``: training items the token table is fitted on: the translations first (up to two
    thirds of them), English sentences filling the rest; ``pairs``: translations a language the
    fit reads from the data (0: every pair of the run's ``--data`` sources; the run's own
    ``max_pairs`` when it read the default source);
    ``vocab``: ``seen`` keeps the tokens of those items plus every one-character token (the
    tokenizer still splits any text), ``all`` keeps the whole vocabulary (e5: 250,002 rows);
    ``ridge``: how strongly a token's vector stays at its start (the source model's vector of
    the token alone) rather than fitting the sentences; ``iterations``: conjugate-gradient
    steps of that fit (0: no fit, the start alone); ``dtype``: how the table is stored.

    60,000 rows is the measured default (docs/static.md): from the pre-built student, 9 minutes
    on 2 cores, 2.7 GiB, dev cross-model 0.477.
    """

    rows: int = 60000
    pairs: int = 0
    vocab: str = "seen"
    ridge: float = 0.01
    iterations: int = 60
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        if not isinstance(self.rows, int) or self.rows < 1:
            raise ValueError(f"--static-rows must be a whole number of at least 1, got {self.rows}")
        if not isinstance(self.pairs, int) or self.pairs < 0:
            raise ValueError(f"--static-pairs must be a whole number from 0, got {self.pairs}")
        if self.vocab not in STATIC_VOCABS:
            raise ValueError(f"--static-vocab must be one of {', '.join(STATIC_VOCABS)}")
        if not (isinstance(self.ridge, int | float) and math.isfinite(self.ridge)) or not (
            self.ridge > 0
        ):
            raise ValueError(f"--static-ridge must be a number above 0, got {self.ridge}")
        if not isinstance(self.iterations, int) or not 0 <= self.iterations <= 10000:
            raise ValueError(f"--static-iterations must be from 0 to 10000, got {self.iterations}")
        if self.dtype not in STATIC_DTYPES:
            raise ValueError(f"--static-dtype must be one of {', '.join(STATIC_DTYPES)}")
