"""The fast no-grad paths (kd.models.fast) and the ONNX export (kd.models.onnx_export)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kd.models.encoder import Encoder

onnx = pytest.importorskip("onnx", reason="onnx is a kd dependency; a trimmed install lacks it")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a kd dependency")

from kd.models import fast  # noqa: E402
from kd.models.onnx_export import (  # noqa: E402
    CHECK_FILE,
    FP32_FILE,
    INT8_FILE,
    ONNX_DIR,
    OnnxEncoder,
    after_activation,
    export_onnx,
)

TEXTS = ["the cat sat", "a dog ran far away", "hello world", "the cat", "good morning to you"]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_export_writes_the_graph_sentence_transformers_runs(tmp_path, tiny_student):
    """The folder is the full student (plain SentenceTransformer loads it, same vectors) with
    onnx/model.onnx taking ids and mask and giving the token states, as sentence-transformers'
    ONNX back end expects; ONNX Runtime's vectors match PyTorch's; int8 is smaller and measured."""
    from sentence_transformers import SentenceTransformer

    student = Encoder.load(tiny_student)
    exported = export_onnx(student, tmp_path / "out", int8=True)
    out = tmp_path / "out"
    reference = student.encode(TEXTS)
    plain = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    assert np.abs(plain - reference).max() < 1e-5

    fp32, int8 = out / ONNX_DIR / FP32_FILE, out / ONNX_DIR / INT8_FILE
    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]
    via_onnx = OnnxEncoder(student, fp32, "onnx-fp32").encode(TEXTS)
    assert (_unit(via_onnx) * _unit(reference)).sum(1).min() > 0.99999
    assert int8.stat().st_size < fp32.stat().st_size
    # Other batch sizes and lengths than the export's sample: the axes are dynamic.
    longer = ["word " * 40, "x"]
    assert OnnxEncoder(student, int8, "onnx-int8").encode(longer).shape == (2, student.dim)

    check = json.loads((out / ONNX_DIR / CHECK_FILE).read_text())
    assert check["cosine_to_pytorch"]["fp32"]["min"] > 0.9999
    assert 0 < check["cosine_to_pytorch"]["int8"]["mean"] <= 1.0
    assert set(exported.files) == {f"{ONNX_DIR}/{FP32_FILE}", f"{ONNX_DIR}/{INT8_FILE}"}
    assert "backend='onnx'" in exported.describe()


def test_feed_forward_down_projections_stay_fp32(tiny_student, tmp_path):
    """One MatMul per layer follows GELU (the tiny student has 2 layers): those are the ones
    int8 would hurt most, and the quantised graph keeps them as float MatMuls."""
    from kd.models.onnx_export import export_transformer, quantize_int8

    graph = export_transformer(Encoder.load(tiny_student), tmp_path / "m.onnx")
    found = after_activation(onnx.load(str(graph)))
    assert len(found) == 2 and all("output/dense" in name for name in found), found
    quantized = onnx.load(str(quantize_int8(graph, tmp_path / "q.onnx")))
    kept = {n.name for n in quantized.graph.node if n.op_type == "MatMul"}
    assert set(found) <= kept
    assert any(
        n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in quantized.graph.node
    )


def test_export_cli_one_line_errors_and_the_onnx_form(tmp_path, tiny_student, capsys):
    from kd.cli import main

    assert main(["export", "--model", tiny_student, "--out", str(tmp_path / "a"), "--int8"]) != 0
    err = capsys.readouterr().err
    assert "--int8 goes with --as onnx" in err and "Traceback" not in err
    out = tmp_path / "b"
    code = main(["export", "--model", tiny_student, "--out", str(out), "--as", "onnx", "--int8"])
    printed = capsys.readouterr().out
    assert code == 0 and (out / ONNX_DIR / INT8_FILE).is_file()
    assert "cosine to PyTorch" in printed and INT8_FILE in printed


def test_each_path_has_its_own_fingerprint_and_cache(tiny_teacher, isolated_cache):
    """Vectors cached from one path are never read as another's: the teacher's cache files
    differ by path, and each path's vectors are what that path computes."""
    from kd.train.parts import teacher_vectors

    teacher = Encoder.load(tiny_teacher)
    via_torch, choice = fast.fast_encoder(teacher, "torch")
    via_int8, choice8 = fast.fast_encoder(teacher, "int8")
    assert via_torch is teacher and choice.path == "torch-fp32"
    assert isinstance(via_int8, OnnxEncoder) and choice8.path == "onnx-int8"
    assert via_int8.fingerprint() != teacher.fingerprint()
    a = teacher_vectors(teacher, TEXTS)
    b = teacher_vectors(via_int8, TEXTS)
    assert len(list((isolated_cache / "teacher").glob("*.npy"))) == 2
    np.testing.assert_allclose(b, _unit(via_int8.encode(TEXTS)), atol=1e-6)
    assert (a * b).sum(1).min() > 0.9
    with pytest.raises(ValueError, match="unknown fast path"):
        fast.fast_encoder(teacher, "fp16")


def test_auto_measures_once_per_model_and_cpu(tiny_teacher, isolated_cache, monkeypatch):
    teacher = Encoder.load(tiny_teacher)
    encoder, choice = fast.fast_encoder(teacher, "auto")
    assert set(choice.speeds) == {"torch-fp32", "onnx-fp32", "onnx-int8"} or (
        "torch-bf16" in choice.speeds
    )
    assert all(s > 0 for s in choice.speeds.values()) and choice.cosine["torch-fp32"] == 1.0
    base = choice.speeds["torch-fp32"]
    # The rule: the fastest that keeps the vectors, and clearly faster than PyTorch.
    good = [
        p
        for p, s in choice.speeds.items()
        if choice.cosine[p] >= fast.MIN_COSINE and s >= fast.SWITCH_MARGIN * base
    ]
    expected = max(good, key=choice.speeds.get) if good else "torch-fp32"
    assert choice.path == expected
    assert choice.cpu == fast.cpu_name() and choice.path in choice.describe()
    recorded = json.loads((fast._graphs_dir(teacher) / "choice.json").read_text())
    assert recorded["path"] == choice.path

    def no_second_measurement(*_a, **_k):
        raise AssertionError("measured again")

    monkeypatch.setattr(fast, "measure", no_second_measurement)
    again, choice2 = fast.fast_encoder(teacher, "auto")
    assert choice2.path == choice.path and type(again) is type(encoder)


def test_a_run_records_the_teachers_path(tmp_path, tiny_teacher, tiny_student, isolated_cache):
    from kd.config import TrainConfig
    from kd.train.run import distill

    data = tmp_path / "fr.tsv"
    data.write_text(
        "en\tfr\n" + "".join(f"sentence {i}\tphrase {i}\n" for i in range(60)), encoding="utf-8"
    )
    cfg = TrainConfig(
        teacher=tiny_teacher,
        student=tiny_student,
        data=[str(data)],
        out=str(tmp_path / "student"),
        english_rows=0,
        eval_pairs=10,
        max_steps=2,
        teacher_path="int8",
    )
    metrics = distill(cfg).metrics
    assert metrics["teacher_path"]["path"] == "onnx-int8"
    assert metrics["config"]["teacher_path"] == "int8"


def test_embed_and_eval_say_their_path(
    tmp_path, tiny_student, tiny_teacher, capsys, isolated_cache
):
    """kd embed takes the fast path (int8 asked: close to PyTorch, said on stderr); kd eval
    measures the models as they are unless told, and its JSON names the path."""
    from kd.cli import main

    lines = tmp_path / "in.txt"
    lines.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    for path in ("torch", "int8"):
        out = tmp_path / f"{path}.npy"
        argv = ["embed", "--model", tiny_student, "--in", str(lines), "--out", str(out)]
        assert main([*argv, "--path", path]) == 0
    err = capsys.readouterr().err
    assert "encodes with onnx-int8" in err
    a, b = np.load(tmp_path / "torch.npy"), np.load(tmp_path / "int8.npy")
    assert a.shape == b.shape and (_unit(a) * _unit(b)).sum(1).min() > 0.9

    sts = tmp_path / "sts"
    sts.mkdir()
    for lang in ("en", "de"):
        (sts / f"{lang}.dev.tsv").write_text(
            "".join(f"{TEXTS[i]}\t{TEXTS[(i + 1) % 5]}\t{i}.0\n" for i in range(5)),
            encoding="utf-8",
        )
    argv = ["eval", "--model", tiny_student, "--teacher", tiny_teacher, "--sts", str(sts)]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == "torch"


def test_the_app_swaps_shared_models_for_their_fast_path(
    monkeypatch, tiny_teacher, tiny_student, isolated_cache, allow_tiny_models
):
    """After the warm-up the shared models encode on their fast path (int8 asked here), the
    graph counted in the model budget; with KD_FAST_PATH=torch they stay PyTorch."""
    from webapp import model_cache, settings

    monkeypatch.setattr(settings, "FAST_PATH", "int8")
    model_cache._load_encoder.cache_clear()
    before = model_cache._load_encoder.bytes()
    model_cache._warm_models([tiny_teacher, tiny_student])
    teacher = model_cache.get_encoder(tiny_teacher)
    assert isinstance(teacher, OnnxEncoder) and teacher.form == "onnx-int8"
    assert model_cache.fast_paths[model_cache.canonical_model_name(tiny_teacher)] == "onnx-int8"
    graphs = teacher.path.stat().st_size + model_cache.get_encoder(tiny_student).path.stat().st_size
    assert model_cache._load_encoder.bytes() - before >= graphs
    vectors = model_cache.encode(tiny_teacher, TEXTS)
    np.testing.assert_allclose(vectors, teacher.encode(TEXTS), atol=1e-6)

    monkeypatch.setattr(settings, "FAST_PATH", "torch")
    model_cache._load_encoder.cache_clear()
    model_cache._warm_models([tiny_teacher])
    assert isinstance(model_cache.get_encoder(tiny_teacher), Encoder)
    model_cache._load_encoder.cache_clear()


def test_a_student_queries_its_teachers_index_built_on_a_fast_path():
    """The teacher's index in the app is built on its fast path (its fingerprint carries the
    form); a student distilled from the same weights still searches it."""
    from kd.search.store import STUDENT_NOTE, ModelStamp, check_query_model

    index = ModelStamp("teacher", "0123456789abcdef-onnx-int8", 32)
    student = ModelStamp("run/student", "fedcba9876543210", 32, "teacher", "0123456789abcdef")
    assert check_query_model(index, student) == STUDENT_NOTE
    other = ModelStamp("run/student", "fedcba9876543210", 32, "teacher", "aaaaaaaaaaaaaaaa")
    with pytest.raises(ValueError, match="another copy"):
        check_query_model(index, other)


def test_the_int8_kernel_bench_prints_a_ratio_per_shape_and_its_last_line():
    bench = Path(__file__).resolve().parent.parent / "bench" / "int8_kernels.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--tokens", "16", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    rows = [line for line in lines if line.strip().startswith(("384x", "1536x"))]
    assert len(rows) == 3 and all(line.rstrip().endswith("x") for line in rows)
    key, value = lines[-1].split("=")
    assert key == "int8_vs_fp32_gemm" and float(value) > 0
    refused = subprocess.run(
        [sys.executable, str(bench), "--tokens", "0"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
