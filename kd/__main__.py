"""``python -m kd ...``: the ``kd`` command (and ``torchrun --nproc_per_node=N -m kd distill``)."""

import sys

from kd.cli import main

sys.exit(main())
