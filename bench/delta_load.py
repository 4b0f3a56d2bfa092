"""What a delta costs and saves: its size against the full student's, and the time to load it
(rebuilt from the base, fingerprint checked) against loading the full folder, in the same run.

    python bench/delta_load.py --model DELTA_OR_FULL_STUDENT [--repeats 3]

The full folder is written once by ``kd export`` into a temporary folder, then each form is
loaded ``--repeats`` times in turn (alternating, so a busy machine slows both alike); the last
line is ``load_ratio=R`` (delta over full, median times) and ``size_ratio=S``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    from kd.models.delta import is_delta
    from kd.models.encoder import Encoder, quiet_transformers
    from kd.models.export import export

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a delta folder or a full student folder")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    quiet_transformers()
    with tempfile.TemporaryDirectory() as tmp:
        delta, full = Path(args.model), Path(tmp) / "full"
        if not is_delta(delta):
            full, delta = delta, Path(tmp) / "delta"
            export(str(full), delta, "delta")
        else:
            export(str(delta), full, "full")
        times: dict[str, list[float]] = {"delta": [], "full": []}
        for _ in range(args.repeats):
            for name, folder in (("delta", delta), ("full", full)):
                started = time.perf_counter()
                Encoder.load(str(folder)).encode(["warm"])
                times[name].append(time.perf_counter() - started)
        tensors = next(delta.glob("*.safetensors")).stat().st_size
        sizes = {"delta": _bytes(delta), "full": _bytes(full)}
        print(f"delta folder {sizes['delta'] / 1e6:.1f} MB (tensors {tensors / 1e6:.1f} MB)")
        print(f"full folder  {sizes['full'] / 1e6:.1f} MB")
        for name, values in times.items():
            print(f"load {name:5} median {statistics.median(values):.2f} s of {values}")
        ratio = statistics.median(times["delta"]) / statistics.median(times["full"])
        print(f"load_ratio={ratio:.2f} size_ratio={sizes['delta'] / sizes['full']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
