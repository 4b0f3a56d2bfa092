"""multilingual-kd: a monolingual sentence-embedding model made multilingual by knowledge
distillation (Reimers & Gurevych, 2020).

The package reads as the pipeline: ``kd.data`` (pairs, English rows, the held-out split),
``kd.models`` (teacher, student, deltas), ``kd.train`` (a run and its loop), ``kd.evaluate``
(held-out pairs, STS, the watch set), ``kd.search`` (an index queried across languages); the
``kd`` command is ``kd.cli``, every run setting ``kd.TrainConfig``.

    >>> from kd import TrainConfig
    >>> TrainConfig(out="student").epochs
    1

``kd.distill`` (:func:`kd.train.run.distill`) is loaded on first use, so ``import kd`` does not
load torch.
"""

from kd.config import TrainConfig

__all__ = ["TrainConfig", "distill"]


def __getattr__(name: str):
    if name == "distill":  # lazily: keeps torch out of `import kd` and `kd --help`
        from kd.train.run import distill

        return distill
    raise AttributeError(f"module 'kd' has no attribute {name!r}")
