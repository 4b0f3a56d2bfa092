"""Stage 3, training: a run's phases (``run``), the one loop (``loop``) over its data (``feed``),
the student's frozen layers cached (``student_forward``, ``disk_cache``), losses, checkpoints,
Stop and the time limit, and several processes under ``torchrun`` (``distributed``,
``stream``).

``kd.train.distill`` is :func:`kd.train.run.distill`, loaded on first use: importing a light
module of this package (``kd.train.stopping``, say) does not load torch and the whole loop."""


def __getattr__(name: str):
    if name == "distill":  # lazily: keeps torch out of `import kd.train.stopping`
        from kd.train.run import distill

        return distill
    raise AttributeError(f"module 'kd.train' has no attribute {name!r}")
