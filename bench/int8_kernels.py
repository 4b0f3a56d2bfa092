"""Can int8 pay on this CPU? ONNX Runtime's dynamic-int8 matrix product against its fp32 one, at
the shapes of the student's linear layers.

The student's transformer spends almost all of its time in matrix products (ONNX Runtime's
profile of the pre-built student: 88% of the fp32 graph's time in ``MatMul``), so the int8 path
can only be as much faster as ONNX Runtime's int8 kernels are on this CPU. This bench measures
exactly that, one layer at a time, with nothing else in the graph: for each shape of e5-small's
linear layers (hidden 384, feed-forward 1,536) a one-node ``MatMul`` graph, and the same graph
after ``quantize_dynamic`` with the settings kd uses (int8 weights per output channel, reduced
range), fed ``--tokens`` rows (64 sentences of 28 tokens, a batch of kd's encoding, by default).
The best of ``--rounds`` runs counts.

It prints the CPU's instruction sets that decide the int8 kernel (AVX2 alone: ``vpmaddubsw``
plus ``vpmaddwd``, about as much work per multiply as fp32's FMA; AVX-512 VNNI or AVX-VNNI:
``vpdpbusd``, one instruction for four products; AMX: tiles), then one row per shape, and last
``int8_vs_fp32_gemm=R``: the mean over the shapes of fp32's time over int8's.

Run: ``python bench/int8_kernels.py [--tokens 1792] [--rounds 20]`` (under a minute).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = ((384, 384), (384, 1536), (1536, 384))
"""(in, out) of e5-small's linear layers: attention projections, feed-forward up and down."""

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")
"""The instruction sets that decide which int8 kernel ONNX Runtime runs."""


def _graphs(folder: Path, k: int, n: int, rng) -> tuple[Path, Path]:
    """A one-node fp32 ``MatMul`` graph of a (k, n) weight, and kd's int8 form of it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from kd.models.onnx_export import quantize_int8

    weight = numpy_helper.from_array((rng.standard_normal((k, n)) * 0.05).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["m", n])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fp32, int8 = folder / f"fp32_{k}x{n}.onnx", folder / f"int8_{k}x{n}.onnx"
    onnx.save(model, str(fp32))
    return fp32, quantize_int8(fp32, int8)


def _best(path: Path, x: np.ndarray, rounds: int) -> float:
    """The best time of ``rounds`` runs of the graph at ``path`` on ``x``, in kd's session."""
    from kd.models.onnx_export import cpu_session

    session = cpu_session(path)
    session.run(None, {"X": x})  # warm-up
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        session.run(None, {"X": x})
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1792, help="rows of each product")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.tokens < 1 or args.rounds < 1:
        parser.error("--tokens and --rounds must be at least 1")

    from kd.models.encoder import cpu_flags
    from kd.models.fast import cpu_name
    from kd.models.onnx_export import require_onnx

    try:
        require_onnx()
    except ValueError as err:
        print(f"int8_kernels: {err}", file=sys.stderr)
        return 2
    have = cpu_flags()
    flags = [f for f in FLAGS if f in have]
    print(f"machine: {cpu_name()}; instruction sets: {', '.join(flags) or 'unknown'}")
    print(f"{args.tokens} rows a product, best of {args.rounds}\n")
    print(f"  {'in x out':<11} {'fp32 GFLOP/s':>13} {'int8 GOP/s':>11} {'int8/fp32':>10}")
    rng = np.random.default_rng(0)
    ratios = []
    with tempfile.TemporaryDirectory(prefix="kd-int8-kernels-") as tmp:
        for k, n in SHAPES:
            fp32, int8 = _graphs(Path(tmp), k, n, rng)
            x = rng.standard_normal((args.tokens, k)).astype(np.float32)
            t32, t8 = _best(fp32, x, args.rounds), _best(int8, x, args.rounds)
            ops = 2 * args.tokens * k * n / 1e9
            ratios.append(t32 / t8)
            print(f"  {f'{k}x{n}':<11} {ops / t32:13.1f} {ops / t8:11.1f} {t32 / t8:9.2f}x")
    print(f"\nint8_vs_fp32_gemm={float(np.mean(ratios)):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
