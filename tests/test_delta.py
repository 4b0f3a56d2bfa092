"""Students stored as deltas: saved by a run, rebuilt from the base, exported, refused if bad."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from kd.cli import main
from kd.models.delta import MANIFEST, TENSORS, DeltaError, is_delta, read_manifest
from kd.models.encoder import Encoder
from kd.models.export import export
from kd.train.run import distill
from tests.test_train import _cfg

SENTS = ["the cat sits on the mat", "le chat est sur le tapis", "good morning friend"]


@pytest.fixture(scope="module")
def delta_run(tmp_path_factory, tiny_teacher, tiny_student):
    """One tiny distillation saved as a delta (the bottom layer frozen, the top one trained)."""
    tmp = tmp_path_factory.mktemp("delta")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KD_CACHE", str(tmp / "cache"))
        cfg = _cfg(tmp, tiny_teacher, tiny_student, save="delta", epochs=1)
        result = distill(cfg)
    return result


def test_a_run_saves_only_the_trained_tensors(delta_run, tiny_student):
    out = delta_run.out
    assert delta_run.saved == "delta" and is_delta(out)
    assert not (out / "model.safetensors").exists() and not (out / "modules.json").exists()
    manifest = read_manifest(out)
    from safetensors.torch import load_file

    keys = set(load_file(out / TENSORS))
    # The frozen bottom layer and the embeddings stay in the base; the top layer and the head move.
    assert any(k.startswith("transformer.encoder.layer.1.") for k in keys)
    assert not any(".layer.0." in k or "embeddings" in k for k in keys)
    assert {"head.weight", "head.bias"} <= keys
    assert manifest["base"] == tiny_student and manifest["config"]["save"] == "delta"
    assert "student_distilled" in manifest["metrics"] or "steps" in manifest["metrics"]
    for name in ("kd_config.json", "metrics.json", "history.json", "README.md"):
        assert (out / name).exists(), name


def test_a_delta_loads_as_the_student_it_was(delta_run, tiny_student, tmp_path):
    """Rebuilt from the base, the delta gives the trained student's vectors, which differ from
    the base's; ``kd export`` writes a folder SentenceTransformer loads to the same vectors."""
    from sentence_transformers import SentenceTransformer

    student = Encoder.load(str(delta_run.out))
    base = Encoder.load(tiny_student)
    mine = student.encode(SENTS)
    assert mine.shape == (3, 32) and not np.allclose(mine, base.encode(SENTS), atol=1e-3)
    assert main(["export", "--model", str(delta_run.out), "--out", str(tmp_path / "full")]) == 0
    st = SentenceTransformer(str(tmp_path / "full"), device="cpu")
    assert np.abs(st.encode(SENTS) - mine).max() < 1e-5
    assert (tmp_path / "full" / "metrics.json").exists()
    # ... and back: the full folder as a delta again, over the same base, gives the same vectors.
    export(str(tmp_path / "full"), tmp_path / "again", "delta")
    again = Encoder.load(str(tmp_path / "again")).encode(SENTS)
    assert np.abs(again - mine).max() < 1e-6


def test_a_recipe_that_trains_nearly_everything_saves_in_full(tmp_path, tiny_teacher, tiny_student):
    cfg = _cfg(tmp_path, tiny_teacher, tiny_student, save="delta", epochs=1, freeze_layers=0)
    messages = []
    result = distill(cfg, status=messages.append)
    assert result.saved == "full" and (result.out / "modules.json").exists()
    said = [m for m in messages if m.startswith("saved the full student")]
    assert said and "so a delta would save little" in said[0]


def _copy(run, tmp_path, name="bad"):
    return shutil.copytree(run.out, tmp_path / name)


def _error(path) -> str:
    with pytest.raises(DeltaError) as err:
        Encoder.load(str(path))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_truncated_delta_is_one_clear_line(delta_run, tmp_path):
    bad = _copy(delta_run, tmp_path)
    blob = (bad / TENSORS).read_bytes()
    (bad / TENSORS).write_bytes(blob[: len(blob) // 2])
    assert "is truncated or damaged" in _error(bad)


def test_a_flipped_byte_fails_the_checksum(delta_run, tmp_path):
    bad = _copy(delta_run, tmp_path)
    blob = bytearray((bad / TENSORS).read_bytes())
    blob[-3] ^= 0xFF
    (bad / TENSORS).write_bytes(bytes(blob))
    assert "does not match its checksum" in _error(bad)


def test_another_base_is_refused_by_its_fingerprint(delta_run, tmp_path, tiny_teacher):
    """The teacher has the student's shape, so only the fingerprint can tell them apart."""
    bad = _copy(delta_run, tmp_path)
    manifest = json.loads((bad / MANIFEST).read_text())
    manifest["base"] = tiny_teacher
    (bad / MANIFEST).write_text(json.dumps(manifest))
    assert "was made from other weights of" in _error(bad)


def test_a_missing_base_is_one_clear_line(delta_run, tmp_path):
    bad = _copy(delta_run, tmp_path)
    manifest = json.loads((bad / MANIFEST).read_text())
    manifest["base"] = str(tmp_path / "gone")
    (bad / MANIFEST).write_text(json.dumps(manifest))
    assert "which does not load here" in _error(bad)


def test_a_pickle_in_a_delta_is_refused_before_anything_loads(delta_run, tmp_path):
    bad = _copy(delta_run, tmp_path)
    torch.save({"x": torch.zeros(2)}, bad / "extra.bin")
    with pytest.raises(ValueError, match="pickle"):
        Encoder.load(str(bad))
    # A pickle under the tensors file's own name is not safetensors, whatever the manifest says.
    bad2 = _copy(delta_run, tmp_path, "bad2")
    blob = pickle.dumps({"weight": [1.0, 2.0]})
    (bad2 / TENSORS).write_bytes(blob)
    manifest = json.loads((bad2 / MANIFEST).read_text())
    import hashlib

    manifest["tensors"] |= {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (bad2 / MANIFEST).write_text(json.dumps(manifest))
    assert "is not a safetensors file" in _error(bad2)


def test_a_garbled_manifest_is_one_clear_line(delta_run, tmp_path):
    bad = _copy(delta_run, tmp_path)
    (bad / MANIFEST).write_text('{"format": "kd-delta/1", "base": 3}')
    assert "lacks or garbles a required field" in _error(bad)
    (bad / MANIFEST).write_text("{not json")
    assert "is unreadable" in _error(bad)


def test_kd_export_errors_are_one_line(delta_run, tmp_path, capsys):
    assert main(["export", "--model", str(delta_run.out), "--out", str(delta_run.out)]) == 2
    assert "--out must be a new folder" in capsys.readouterr().err
    bad = _copy(delta_run, tmp_path)
    (bad / TENSORS).write_bytes(b"")
    assert main(["export", "--model", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kd: error: delta 'bad'") and err.count("\n") == 1


def test_the_default_recipe_delta_is_under_five_percent_of_the_student():
    """With the packaged multilingual-e5-small and the default recipe's frozen layers, what a
    run changes (the top layers and the head) is a small share of what a full save writes."""
    from kd.config import TrainConfig
    from kd.models.delta import delta_tensors, trained_keys, weight_bytes
    from kd.models.registry import DEFAULT_STUDENT, installed
    from kd.train.student_forward import trainable_parameters

    if not installed(DEFAULT_STUDENT):
        pytest.skip(f"{DEFAULT_STUDENT} is not installed here")
    student = Encoder.load(DEFAULT_STUDENT)
    trainable_parameters(student, TrainConfig().freeze_layers)
    student.head = torch.nn.Linear(384, 384)  # the teacher's width (all-MiniLM-L6-v2)
    tensors = delta_tensors(student, trained_keys(student))
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    share = size / weight_bytes(student)
    assert 0.01 < share <= 0.05, share


def test_the_app_builds_a_delta_on_a_copy_of_the_base_it_holds(
    delta_run, tiny_student, monkeypatch
):
    """A student brought back to the app is rebuilt on a copy of its base from the model cache,
    sharing the cached tokenizer (building one anew held Python's lock and stalled every page),
    with the vectors of a plain load, and the cached base left as it was."""
    import kd.models.encoder as encoder_module
    from webapp import model_cache

    model_cache._load_encoder.cache_clear()
    base = model_cache.get_encoder(tiny_student, public=False)
    before = base.encode(SENTS)
    loads = []
    real = encoder_module._load_sentence_transformer
    monkeypatch.setattr(
        encoder_module,
        "_load_sentence_transformer",
        lambda name, device: loads.append(name) or real(name, device),
    )
    student = model_cache.get_encoder(str(delta_run.out), public=False)
    assert loads == []  # nothing read from disk but the delta itself
    assert student.tokenizer is base.tokenizer and student.transformer is not base.transformer
    plain = Encoder.load(str(delta_run.out))
    assert np.abs(student.encode(SENTS) - plain.encode(SENTS)).max() < 1e-6
    assert np.abs(base.encode(SENTS) - before).max() == 0
    model_cache._load_encoder.cache_clear()
