"""Several processes (torchrun, gloo on the CPU) and the streaming path, on tiny random models.

The launched runs use a dropout-free copy of the tiny student: with dropout each rank draws its
own masks, so two processes and one agree in distribution only; without it they take the same
steps, and what is left between them is float rounding (sums in another order), which AdamW's
first steps (update ~ lr * sign(gradient)) can turn into one lr-sized step on a weight whose
gradient is ~0. Hence the tolerances: on the student's *outputs* (max |difference| of unit
vectors below 2e-3, cosine above 0.9999) and on the updates as a whole (relative difference
below 5%); measured here: 1.1e-4, 0.9999999 and 1.2% after 48 steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kd.config import TrainConfig
from tests.test_faults import STALL as STALL_AFTER_CHECKPOINT
from tests.test_train import _write_pairs

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def nodrop_student(tiny_student, tmp_path_factory) -> str:
    """The tiny student without dropout (see the module docstring)."""
    path = tmp_path_factory.mktemp("nodrop") / "st"
    shutil.copytree(tiny_student, path)
    config = json.loads((path / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def _argv(out, data, teacher, student, **extra) -> list[str]:
    opts = {
        "out": out,
        "teacher": teacher,
        "student": student,
        "langs": "fr",
        "max-pairs": 0,
        "english-rows": 0,
        "eval-pairs": 10,
        "data": data,
        "epochs": 1,
        "batch-size": 8,
        "freeze-layers": 1,
        "checkpoint-every": 5,
        "device": "cpu",
    } | extra
    argv = ["distill", "--stream"]
    for k, v in opts.items():
        argv += [f"--{k}", str(v)]
    return argv


def _env(cache: Path) -> dict:
    return os.environ | {
        "KD_CACHE": str(cache),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "KD_DIST_TIMEOUT_S": "60",
    }


def _vectors(model: str) -> np.ndarray:
    from kd.models.encoder import Encoder

    sents = ["le chat est sur le tapis", "the dog runs", "la maison rouge et bleu", "a big cat"]
    return Encoder.load(model).encode(sents)


def _weights(model: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(model).rglob("*.safetensors")):
        if "checkpoint" not in f.parts:
            rel = f.relative_to(model)
            out |= {f"{rel}:{k}": v.double() for k, v in load_file(str(f)).items()}
    return out


def _relative_update_difference(a: str, b: str, init: str) -> float:
    wa, wb, w0 = _weights(a), _weights(b), _weights(init)
    assert wa.keys() == wb.keys()
    trained = [k for k in wa if k in w0 and not torch.equal(wa[k], w0[k])]
    assert trained, "training changed no weight"
    da = torch.cat([(wa[k] - w0[k]).flatten() for k in trained])
    db = torch.cat([(wb[k] - w0[k]).flatten() for k in trained])
    return float((da - db).norm() / da.norm())


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_teacher, nodrop_student):
    """One uninterrupted 2-process run (torchrun, gloo), shared by the tests below."""
    root = tmp_path_factory.mktemp("ddp")
    data = _write_pairs(root / "fr.tsv", n=200)
    out = root / "two"
    argv = _argv(out, data, tiny_teacher, nodrop_student)
    done = subprocess.run(
        [*TORCHRUN, "-m", "kd", *argv],
        cwd=ROOT,
        env=_env(root / "cache"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "data": data, "out": out, "stdout": done.stdout, "argv": argv}


def test_two_gloo_ranks_train_the_same_weights_as_one_process(
    two_ranks, tiny_teacher, nodrop_student, monkeypatch
):
    from kd.train.run import distill

    root = two_ranks["root"]
    monkeypatch.setenv("KD_CACHE", str(root / "cache-one"))
    cfg = TrainConfig(
        out=str(root / "one"),
        teacher=tiny_teacher,
        student=nodrop_student,
        langs=["fr"],
        max_pairs=0,
        english_rows=0,
        eval_pairs=10,
        data=[str(two_ranks["data"])],
        epochs=1,
        batch_size=8,
        freeze_layers=1,
        checkpoint_every=5,
        device="cpu",
        stream=True,
    )
    one = distill(cfg)
    two = json.loads((two_ranks["out"] / "metrics.json").read_text())
    assert two["world_size"] == 2 and one.metrics["world_size"] == 1
    assert two["steps"] == one.steps == one.metrics["total_steps"] > 10
    # The same global batches: the same loss at every step, up to rounding.
    h1 = json.loads((root / "one" / "history.json").read_text())
    h2 = json.loads((two_ranks["out"] / "history.json").read_text())
    assert [h["step"] for h in h1] == [h["step"] for h in h2]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(h1, h2, strict=True)) < 5e-3
    # The same student, within the stated tolerance.
    v1, v2 = _vectors(str(root / "one")), _vectors(str(two_ranks["out"]))
    assert np.abs(v1 - v2).max() < 2e-3
    assert (v1 * v2).sum(1).min() > 0.9999
    moved = _relative_update_difference(str(root / "one"), str(two_ranks["out"]), nodrop_student)
    print(
        f"2 ranks vs 1 process after {one.steps} steps: vectors max |diff| "
        f"{np.abs(v1 - v2).max():.2e}, min cosine {(v1 * v2).sum(1).min():.7f}, "
        f"updates relative difference {moved:.4f}"
    )
    assert moved < 0.05
    # ... while training did move it: the untrained student's vectors are far from both.
    assert np.abs(_vectors(nodrop_student) - v1).max() > 0.1
    # Rank 0 alone reports: the summary is printed once.
    assert two_ranks["stdout"].count("student saved to") == 1


# The run stalls on rank 0 right after the checkpoint of step STALL_AT is written; each rank
# writes its pid to a file beside the script (a file, not stdout: torchrun merges both ranks'
# output into one pipe, where two lines can interleave), so the test can kill one rank (rank 1)
# while rank 0 waits, as a machine going down.
STALL_AT = 10
STALL = (  # tests/test_faults.py's stalling run, each rank writing its pid first
    "import os, pathlib\n"
    "pathlib.Path(__file__).with_name(f\"pid-{os.environ['RANK']}\").write_text(str(os.getpid()))\n"
    + STALL_AFTER_CHECKPOINT
)


def test_one_rank_killed_after_a_checkpoint_ends_the_job_and_resume_finishes_it(
    two_ranks, tiny_teacher, nodrop_student
):
    root = two_ranks["root"]
    out = root / "killed"
    argv = _argv(out, two_ranks["data"], tiny_teacher, nodrop_student)
    script = root / "stall.py"
    script.write_text(STALL)
    env = _env(root / "cache")
    job = subprocess.Popen(
        [*TORCHRUN, str(script), str(STALL_AT), *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for line in job.stdout:  # ends when the run stalls, finishes or fails
            if "STALLED" in line:
                break
        else:
            pytest.fail(f"the run ended before step {STALL_AT}'s checkpoint: {job.stderr.read()}")
        pid_1 = int((root / "pid-1").read_text())
        os.kill(pid_1, signal.SIGKILL)  # one rank dies; torchrun must end the whole job
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
    assert job.returncode != 0
    assert "FAILED" in err and "exitcode" in err and "-9" in err, err[-2000:]
    meta = json.loads((out / "checkpoint" / "meta.json").read_text())
    assert meta["step"] == STALL_AT and meta["world_size"] == 2
    assert not (out / "metrics.json").exists()

    done = subprocess.run(
        [*TORCHRUN, "-m", "kd", *argv, "--resume"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {out / 'checkpoint'} at step {STALL_AT}" in done.stdout
    history = json.loads((out / "history.json").read_text())
    assert history[0]["step"] == STALL_AT + 1
    assert not (out / "checkpoint").exists()
    # The same result as the run that was never interrupted (same ranks, same order: exact but
    # for rounding).
    v_resumed, v_whole = _vectors(str(out)), _vectors(str(two_ranks["out"]))
    assert np.abs(v_resumed - v_whole).max() < 1e-5
    wa, wb = _weights(str(out)), _weights(str(two_ranks["out"]))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5


def test_a_rank_losing_its_peer_ends_with_one_line(two_ranks, tiny_teacher, nodrop_student):
    """Two ranks without torchrun's agent (as on two machines, where no local agent ends the
    survivor): rank 1 is killed while they train, and rank 0 ends at its next collective with
    one line, no traceback."""
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = two_ranks["root"]
    argv = _argv(root / "lost", two_ranks["data"], tiny_teacher, nodrop_student, epochs=500)
    base = _env(root / "cache") | {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "kd", *argv],
            cwd=ROOT,
            env=base | {"RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        for line in ranks[0].stdout:  # rank 0's phases; training follows the head's fit
            if "fitting the linear head" in line:
                break
        ranks[1].kill()
        _out, err = ranks[0].communicate(timeout=120)
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert ranks[0].returncode == 2
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.startswith("kd: ")]
    assert lines[-1].startswith("kd: error: rank 0 of 2: another process of this torchrun job")
    assert lines[-1].endswith("with --resume to continue from the last checkpoint")
    assert "Traceback" not in err


# ---- the pieces, in process ---------------------------------------------------------------------
def test_shard_range_splits_evenly_and_covers_everything():
    from kd.train.distributed import shard_range

    for n in (0, 1, 7, 8, 100):
        for parts in (1, 2, 3, 8):
            spans = [shard_range(n, parts, i) for i in range(parts)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
            sizes = [b - a for a, b in spans]
            assert max(sizes) - min(sizes) <= 1


def test_sampled_rank_loss_is_rank_loss_with_the_whole_bank_and_masks_its_own_row():
    from torch.nn import functional as F

    from kd.train.losses import rank_loss, sampled_rank_loss

    torch.manual_seed(0)
    bank = F.normalize(torch.randn(50, 16), dim=-1)
    s = torch.randn(8, 16)
    target = torch.tensor([0, 3, 3, 7, 10, 20, 49, 1])
    ids = torch.arange(50)
    full = sampled_rank_loss(s, bank[target], bank, ids, target, 0.05)
    assert torch.allclose(full, rank_loss(s, bank, target, 0.05), atol=1e-5)
    # A bank without the targets: the positive still counts once (softmax over 1 + K columns).
    others = torch.tensor([i for i in range(50) if i not in target.tolist()])
    part = sampled_rank_loss(s, bank[target], bank[others], others, target, 0.05)
    cols = torch.cat([bank[target][:, None, :], bank[others][None].expand(8, -1, -1)], 1)
    logits = (F.normalize(s, dim=-1)[:, None, :] * cols).sum(-1) / 0.05
    assert torch.allclose(part, F.cross_entropy(logits, torch.zeros(8, dtype=torch.long)))


def test_corpus_streams_pairs_holds_out_by_english_sentence_and_dedupes(tmp_path, isolated_cache):
    from kd.data.corpus import open_corpus

    folder = tmp_path / "data"
    folder.mkdir()
    en = [f"sentence number {i}" for i in range(60)]
    (folder / "de.tsv").write_text("en\tde\n" + "".join(f"{e}\tsatz {e}\n" for e in en))
    (folder / "fr.tsv").write_text("en\tfr\n" + "".join(f"{e}\tphrase {e}\n" for e in en[:40]))
    cfg = TrainConfig(
        out=str(tmp_path / "o"),
        langs=["de", "fr"],
        data=[str(folder)],
        max_pairs=0,
        english_rows=0,
        eval_pairs=5,
    )
    corpus, _note = open_corpus(cfg)
    held = {e for lang in corpus.eval_sets for e in corpus.eval_sets[lang][0]}
    assert {len(v[0]) for v in corpus.eval_sets.values()} == {5}
    english = set(corpus.english(range(corpus.n_english)))
    assert not held & english  # a held-out sentence trains in no language
    assert len(english) == corpus.n_english  # each English sentence once
    # Each language holds out its 5 keys of smallest hash, so 5 to 10 sentences leave training.
    assert 60 - 10 <= corpus.n_english <= 60 - len(held) == 55
    x_items = range(corpus.n_english, corpus.n_items)
    for i, text in zip(x_items, corpus.texts(x_items), strict=True):
        assert text.endswith(corpus.text(int(corpus.target(np.array([i]))[0])))
    assert corpus.summary()["de"] == corpus.n_english  # every training sentence has German
    again, _ = open_corpus(cfg)  # built once, then reused
    assert again.root == corpus.root


def test_teacher_vectors_are_cached_on_disk_by_sentence(tmp_path, tiny_teacher, isolated_cache):
    from kd.data.corpus import open_corpus
    from kd.models.encoder import Encoder
    from kd.train.disk_cache import teacher_bank
    from kd.train.distributed import World

    data = _write_pairs(tmp_path / "fr.tsv", n=40)
    cfg = TrainConfig(
        out=str(tmp_path / "o"), langs=["fr"], data=[str(data)], max_pairs=0, english_rows=0
    )
    corpus, _ = open_corpus(cfg)
    teacher = Encoder.load(tiny_teacher)
    bank = teacher_bank(teacher, corpus, "fp32", World())
    exact = teacher.encode(corpus.english(range(corpus.n_english)))
    assert np.abs(bank.get(np.arange(corpus.n_english)) - exact).max() < 2e-3  # float16
    calls = []
    original = teacher.encode
    teacher.encode = lambda *a, **k: calls.append(1) or original(*a, **k)
    teacher_bank(teacher, corpus, "fp32", World())  # a second run: nothing to encode
    assert not calls


def test_disk_prefix_cache_matches_the_in_memory_one(tmp_path, tiny_student, isolated_cache):
    from kd.data.corpus import open_corpus
    from kd.models.encoder import Encoder
    from kd.train.disk_cache import DiskPrefixCache
    from kd.train.distributed import World
    from kd.train.student_forward import FrozenPrefixCache

    data = _write_pairs(tmp_path / "fr.tsv", n=40)
    cfg = TrainConfig(
        out=str(tmp_path / "o"), langs=["fr"], data=[str(data)], max_pairs=0, english_rows=0
    )
    corpus, _ = open_corpus(cfg)
    student = Encoder.load(tiny_student)
    student.eval()
    texts = corpus.texts(range(corpus.n_items))
    memory = FrozenPrefixCache(student, texts, 1, 48)
    disk = DiskPrefixCache(student, corpus, 1, 48, World())
    assert (disk.lengths() == memory.lengths()).all()
    idx = np.array([0, 5, corpus.n_items - 1])
    with torch.no_grad():
        assert torch.allclose(disk.embed(idx), memory.embed(idx), atol=1e-5)


def test_memory_and_disk_paths_train_the_same_student(
    tmp_path, tiny_teacher, nodrop_student, isolated_cache
):
    """One loop, one sampling rule: the same small run, once with its data in memory and once
    streamed into the corpus on disk, holds out the same pairs, samples the same ones, takes
    the same steps and trains the same weights (up to the disk path's float16 teacher vectors);
    both write the watch set and score STS."""
    from kd.evaluate.watch import WatchSet
    from kd.train.run import distill
    from tests.test_sts import write_sts

    data = _write_pairs(tmp_path / "fr.tsv", n=200)
    common = dict(
        teacher=tiny_teacher,
        student=nodrop_student,
        langs=["fr"],
        max_pairs=120,
        english_rows=0,
        eval_pairs=10,
        evals=2,
        data=[str(data)],
        epochs=1,
        batch_size=8,
        freeze_layers=1,
        device="cpu",
        sts=str(write_sts(tmp_path / "sts")),
    )
    memory = distill(TrainConfig(out=str(tmp_path / "memory"), **common))
    disk = distill(TrainConfig(out=str(tmp_path / "disk"), stream=True, **common))
    assert disk.metrics["stream"] and "stream" not in memory.metrics
    assert memory.metrics["data"] == disk.metrics["data"] == {"en": 120, "fr": 120}
    assert memory.steps == disk.steps == 30  # 240 items in batches of 8
    for key in ("teacher", "student_untrained"):  # the same held-out pairs
        a, b = memory.metrics[key]["fr"], disk.metrics[key]["fr"]
        assert a == pytest.approx(b, abs=1e-6)
    h1 = json.loads((tmp_path / "memory" / "history.json").read_text())
    h2 = json.loads((tmp_path / "disk" / "history.json").read_text())
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(h1, h2, strict=True)) < 5e-3
    v1, v2 = _vectors(str(tmp_path / "memory")), _vectors(str(tmp_path / "disk"))
    moved = _relative_update_difference(
        str(tmp_path / "memory"), str(tmp_path / "disk"), nodrop_student
    )
    print(f"memory vs disk: vectors max |diff| {np.abs(v1 - v2).max():.2e}, updates {moved:.4f}")
    assert np.abs(v1 - v2).max() < 5e-4 and moved < 0.01  # measured: 5.8e-5 and 0.0005
    assert np.abs(_vectors(nodrop_student) - v1).max() > 0.1  # ... and training moved it
    # Another seed samples other pairs and trains another student: the check can fail.
    other = distill(TrainConfig(out=str(tmp_path / "seed1"), stream=True, seed=1, **common))
    assert (
        _relative_update_difference(str(tmp_path / "seed1"), str(tmp_path / "disk"), nodrop_student)
        > 0.2
    )
    assert other.metrics["data"] == disk.metrics["data"]
    # The streaming run keeps a watch set and scores STS, as the in-memory one does.
    for run in (memory, disk):
        watch = WatchSet.load(run.out)
        assert watch is not None and watch.frames[-1] == "distilled"
        assert set(run.metrics["sts"]) >= {"teacher", "student_untrained", "student_distilled"}
    assert WatchSet.load(disk.out).frames == WatchSet.load(memory.out).frames


def test_stream_run_refuses_a_resume_with_other_settings(
    tmp_path, tiny_teacher, tiny_student, isolated_cache
):
    from kd.train.run import distill

    data = _write_pairs(tmp_path / "fr.tsv", n=60)
    base = dict(
        out=str(tmp_path / "o"),
        teacher=tiny_teacher,
        student=tiny_student,
        langs=["fr"],
        max_pairs=0,
        english_rows=0,
        eval_pairs=0,
        data=[str(data)],
        epochs=1,
        batch_size=8,
        freeze_layers=1,
        checkpoint_every=2,
        device="cpu",
        stream=True,
    )
    steps = []
    first = distill(
        TrainConfig(**base),
        on_step=lambda s, m: steps.append(s),
        should_stop=lambda: len(steps) >= 3,
    )
    assert first.steps == 3
    assert first.stopped and (tmp_path / "o" / "checkpoint").exists()
    with pytest.raises(ValueError, match="cannot resume.*batch_size"):
        distill(TrainConfig(**(base | {"batch_size": 4, "resume": True})))
    resumed = distill(TrainConfig(**(base | {"resume": True})))
    assert resumed.steps == resumed.metrics["total_steps"] and not resumed.stopped


def test_streaming_readers_give_what_the_whole_file_readers_give(tmp_path):
    from kd.data.pairs import iter_jsonl, iter_tsv, read_jsonl, read_tsv

    tsv = tmp_path / "de.tsv"
    tsv.write_text(
        "\ufeffen\tde\nGood  morning.\tGuten Morgen.\n\n \t leer\nThank you.\tDanke.\r\n",
        encoding="utf-8",
    )
    assert list(iter_tsv(tsv)) == read_tsv(tsv)
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(
        '{"en": "Hello.", "text": "Bonjour.", "lang": "fr"}\n\n{"en": "Only English.", '
        '"lang": "en"}\n',
        encoding="utf-8",
    )
    assert list(iter_jsonl(jsonl)) == read_jsonl(jsonl)
    for name, body in (("bad.tsv", "en\tde\na\tb\tc\n"), ("bad2.tsv", "en\tde\nok\tgut\n\xff\n")):
        path = tmp_path / name
        path.write_bytes(body.encode("latin-1") if "\xff" in body else body.encode())
        with pytest.raises(ValueError) as whole:
            read_tsv(path)
        with pytest.raises(ValueError) as streamed:
            list(iter_tsv(path))
        assert str(streamed.value) == str(whole.value)
