"""Distillation end to end on tiny random models: training, saving, resuming, not collapsing."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from kd.config import TrainConfig
from kd.models.encoder import Encoder
from kd.train.loop import BatchPlan
from kd.train.losses import cos_loss, distillation_loss, kl_loss, mse_loss, rank_loss
from kd.train.run import distill, fit_linear_head
from tests.conftest import WORDS

EN = WORDS[:17]
FR = WORDS[17:30]


def _write_pairs(path, n=120, seed=0):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        k = rng.randint(3, 7)
        en = " ".join(rng.choice(EN) for _ in range(k))
        fr = " ".join(rng.choice(FR) for _ in range(k))
        lines.append(f"{en}\t{fr}")
    path.write_text("en\tfr\n" + "\n".join(dict.fromkeys(lines)) + "\n", encoding="utf-8")
    return path


def _cfg(tmp_path, tiny_teacher, tiny_student, **kw):
    data = _write_pairs(tmp_path / "fr.tsv")
    base = dict(
        out=str(tmp_path / "student"),
        teacher=tiny_teacher,
        student=tiny_student,
        langs=["fr"],
        max_pairs=0,
        english_rows=0,
        data=[str(data)],
        epochs=2,
        batch_size=8,
        lr=1e-3,
        head_lr=1e-2,
        freeze_layers=1,
        eval_pairs=0,
        checkpoint_every=0,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def test_losses_hand_checked():
    t = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    assert mse_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert mse_loss(-t, t).item() == pytest.approx(4.0, abs=1e-5)  # ||-t - t||^2 = 4
    assert cos_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_loss(t, t).item() == pytest.approx(0.0, abs=1e-5)
    assert kl_loss(t.flip(0), t).item() > 0.1
    with pytest.raises(ValueError, match="unknown loss"):
        distillation_loss("l1", t, t, 0.05)


def test_mse_has_no_zero_vector_escape():
    """Plain per-element MSE is smallest near zero for unit targets; ours cannot go there."""
    t = torch.nn.functional.normalize(torch.randn(64, 384), dim=-1)
    tiny = 1e-6 * torch.randn(64, 384)
    naive = ((tiny - t) ** 2).mean()
    assert naive.item() == pytest.approx(1 / 384, rel=1e-3)  # the collapse plateau
    assert mse_loss(tiny, t).item() > 1.5  # direction still matters: ~2 for random directions


def test_fit_linear_head_recovers_a_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    w = rng.normal(size=(6, 3))
    head = fit_linear_head(x, x @ w - 2.0, ridge=1e-8)
    pred = head(torch.from_numpy(x).float()).detach().numpy()
    assert np.allclose(pred, x @ w - 2.0, atol=1e-3)


def test_batches_cover_every_item_once_and_are_deterministic():
    lengths = np.random.default_rng(0).integers(3, 40, size=1000)
    a = list(BatchPlan(lengths, 32, seed=1, epoch=0))
    b = list(BatchPlan(lengths, 32, seed=1, epoch=0))
    c = list(BatchPlan(lengths, 32, seed=1, epoch=1))
    assert sorted(np.concatenate(a).tolist()) == list(range(1000))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(a, c, strict=False))
    # Batches of similar length: within a pool of 50 batches the items are sorted by length.
    spread = np.mean([np.ptp(lengths[x]) for x in a])
    assert spread < np.ptp(lengths) / 4


def test_distill_saves_a_loadable_student(tmp_path, tiny_teacher, tiny_student, isolated_cache):
    from sentence_transformers import SentenceTransformer

    cfg = _cfg(tmp_path, tiny_teacher, tiny_student)
    steps = []
    result = distill(cfg, on_step=lambda s, m: steps.append((s, m["loss"])))
    assert result.steps == len(steps) > 0 and not result.stopped
    out = tmp_path / "student"
    for name in ("modules.json", "kd_config.json", "metrics.json", "history.json"):
        assert (out / name).exists(), name
    assert not (out / "checkpoint").exists()
    st = SentenceTransformer(str(out), device="cpu")
    mine = Encoder.load(str(out))
    sents = ["the cat sits on the mat", "le chat est sur le tapis"]
    assert np.allclose(st.encode(sents), mine.encode(sents), atol=1e-5)
    assert st.encode(sents).shape == (2, 32)  # the teacher's dimension, via the head
    # Trained on max_seq_length tokens, saved with the student's full length (the tiny one: 64).
    assert cfg.max_seq_length < 64 and st.max_seq_length == mine.max_seq_length == 64
    losses = [loss for _, loss in steps]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_short_run_does_not_collapse(tmp_path, tiny_teacher, tiny_student, isolated_cache):
    """After training, distinct sentences keep distinct vectors that track the teacher's."""
    cfg = _cfg(tmp_path, tiny_teacher, tiny_student, epochs=5)
    distill(cfg)
    student = Encoder.load(str(tmp_path / "student"))
    teacher = Encoder.load(tiny_teacher)
    lines = (tmp_path / "fr.tsv").read_text().splitlines()[1:60]
    sents = [line.split("\t")[0] for line in lines]
    s, t = student.encode(sents), teacher.encode(sents)
    off = ~np.eye(len(s), dtype=bool)
    # Collapse would put every sentence on one direction (mean cosine -> 1); the student keeps
    # roughly the teacher's spread instead.
    assert (s @ s.T)[off].mean() < (t @ t.T)[off].mean() + 0.05
    assert np.linalg.norm(s, axis=1).min() > 0.99  # unit vectors, not shrunk to zero
    hits = ((s @ t.T).argmax(1) == np.arange(len(s))).mean()
    assert hits > 0.5  # chance is 1/59


def test_stop_then_resume_continues(tmp_path, tiny_teacher, tiny_student, isolated_cache):
    cfg = _cfg(tmp_path, tiny_teacher, tiny_student, checkpoint_every=2)
    steps: list[int] = []  # should_stop is polled in every phase, so it counts steps, not calls
    first = distill(cfg, on_step=lambda s, _: steps.append(s), should_stop=lambda: len(steps) >= 4)
    assert first.stopped and first.steps == 4
    assert (tmp_path / "student" / "checkpoint" / "meta.json").exists()
    resumed = distill(_cfg(tmp_path, tiny_teacher, tiny_student, checkpoint_every=2, resume=True))
    full = distill(_cfg(tmp_path, tiny_teacher, tiny_student, out=str(tmp_path / "b")))
    assert resumed.steps == full.steps
    history = json.loads((tmp_path / "student" / "history.json").read_text())
    assert history[0]["step"] == 5  # the resumed run started after the checkpoint
    # Stopping and resuming changes nothing: the same weights as the uninterrupted run.
    sents = ["the cat sits on the mat", "le chat est sur le tapis", "hello world"]
    a = Encoder.load(str(tmp_path / "student")).encode(sents)
    b = Encoder.load(str(tmp_path / "b")).encode(sents)
    assert np.allclose(a, b, atol=1e-5), np.abs(a - b).max()


def test_resume_refuses_other_settings(tmp_path, tiny_teacher, tiny_student, isolated_cache):
    cfg = _cfg(tmp_path, tiny_teacher, tiny_student, checkpoint_every=1)
    steps: list[int] = []
    distill(cfg, on_step=lambda s, _: steps.append(s), should_stop=lambda: len(steps) >= 2)
    changed = _cfg(tmp_path, tiny_teacher, tiny_student, checkpoint_every=1, resume=True, lr=5e-4)
    with pytest.raises(ValueError, match="different settings.*lr"):
        distill(changed)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, tiny_teacher, tiny_student, isolated_cache):
    cfg = _cfg(tmp_path, tiny_teacher, tiny_student, checkpoint_every=1)
    steps: list[int] = []
    distill(cfg, on_step=lambda s, _: steps.append(s), should_stop=lambda: len(steps) >= 2)
    state = tmp_path / "student" / "checkpoint" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        distill(_cfg(tmp_path, tiny_teacher, tiny_student, checkpoint_every=1, resume=True))


def _losses_fall(cfg) -> None:
    """Run ``cfg`` and check that it learnt: the last steps' loss is below the first steps'."""
    losses = []
    result = distill(cfg, on_step=lambda step, m: losses.append(m["loss"]))
    assert result.steps == len(losses) >= 10
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


@pytest.mark.parametrize("loss", ["kl", "cos"])
def test_other_losses_train(tmp_path, tiny_teacher, tiny_student, isolated_cache, loss):
    _losses_fall(_cfg(tmp_path, tiny_teacher, tiny_student, loss=loss, epochs=1))


def test_full_forward_path(tmp_path, tiny_teacher, tiny_student, isolated_cache):
    _losses_fall(_cfg(tmp_path, tiny_teacher, tiny_student, freeze_layers=0, epochs=1))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lr": -1.0}, "--lr"),
        ({"batch_size": 0}, "--batch-size"),
        ({"epochs": 0}, "--epochs"),
        ({"loss": "l2"}, "--loss"),
        ({"langs": ["xx"]}, "unknown language code"),
        ({"langs": []}, "language"),
        ({"max_pairs": 0, "english_rows": 0, "data": []}, "no training data"),
        ({"lr": float("nan")}, "--lr"),
    ],
)
def test_config_rejects_bad_values(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)


def test_frozen_prefix_cache_matches_the_full_forward(tiny_student):
    from kd.train.student_forward import FrozenPrefixCache

    student = Encoder.load(tiny_student)
    student.eval()
    texts = [" ".join(EN[i : i + k]) for i, k in zip(range(6), (3, 1, 5, 2, 7, 4), strict=True)]
    cache = FrozenPrefixCache(student, texts, k=1, max_length=32)
    idx = np.array([4, 0, 2])
    with torch.inference_mode():
        full = student(student.tokenize([texts[i] for i in idx], 32))
        cached = cache.embed(idx)
        # Rebuilt from saved tensors (bench/recipe_probe.py does this): the same vectors.
        again = FrozenPrefixCache.from_states(student, 1, cache.states, cache.offsets).embed(idx)
    assert torch.allclose(cached, full, atol=1e-5)
    assert torch.equal(again, cached)


def test_sts_is_scored_before_and_after_when_configured(tmp_path, tiny_teacher, tiny_student):
    from tests.test_sts import write_sts

    sts = write_sts(tmp_path / "sts")
    cfg = _cfg(tmp_path, tiny_teacher, tiny_student, langs=["fr", "de"], sts=str(sts))
    cfg.data = [str(_write_pairs(tmp_path / "fr.tsv"))]
    metrics = distill(cfg).metrics
    report = metrics["sts"]
    assert report["langs"] == ["en", "de", "fr"] and report["pairs"] == 5
    for model in ("teacher", "student_untrained", "student_distilled"):
        assert set(report[model]) >= {"en", "fr", "de", "mean"}
    # the teacher scores itself on English in both settings: the reference
    assert report["teacher"]["en"]["mono"] == report["teacher"]["en"]["cross"]
    assert -100 <= report["student_distilled"]["mean"]["cross"] <= 100


def test_no_sts_without_a_folder(tmp_path, tiny_teacher, tiny_student, monkeypatch):
    monkeypatch.delenv("KD_STS", raising=False)
    assert "sts" not in distill(_cfg(tmp_path, tiny_teacher, tiny_student)).metrics


def test_rank_loss_is_cross_entropy_over_the_teachers_bank():
    bank = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    target = torch.tensor([0, 3])
    s = 5 * bank[target] + 0.1 * torch.randn(2, 8)  # scale does not matter
    logits = torch.nn.functional.normalize(s, dim=-1) @ bank.T / 0.1
    by_hand = -(logits.log_softmax(-1)[torch.arange(2), target]).mean()
    assert rank_loss(s, bank, target, 0.1).item() == pytest.approx(by_hand.item(), rel=1e-5)
    # the right sentence first costs less than a wrong one first
    assert rank_loss(bank[target], bank, target, 0.05) < rank_loss(bank[[1, 2]], bank, target, 0.05)


def test_a_run_with_the_ranking_term_trains(tmp_path, tiny_teacher, tiny_student):
    cfg = _cfg(tmp_path, tiny_teacher, tiny_student, rank_weight=1.0, eval_pairs=10)
    _losses_fall(cfg)
    assert "student_distilled" in json.loads((tmp_path / "student" / "metrics.json").read_text())


def test_evals_spread_over_the_real_step_total(tmp_path, tiny_teacher, tiny_student):
    """``evals`` evaluations land evenly in the run, counted from the steps it really has."""
    cfg = _cfg(tmp_path, tiny_teacher, tiny_student, evals=3, eval_pairs=10)
    evaluated = []
    result = distill(cfg, on_step=lambda step, m: "eval" in m and evaluated.append(step))
    total = result.metrics["total_steps"]
    every = math.ceil(total / 4)
    assert total > 9 and evaluated == [every, 2 * every, 3 * every]


def test_a_run_keeps_its_watch_set(tmp_path, tiny_teacher, tiny_student):
    """The held-out translations watched through the run: a frame per evaluation, saved."""
    from kd.evaluate.watch import WatchSet

    cfg = _cfg(tmp_path, tiny_teacher, tiny_student, evals=2, eval_pairs=10)
    distill(cfg)
    watch = WatchSet.load(tmp_path / "student")
    assert watch is not None and len(watch.english) == 8 and set(watch.langs) == {"fr"}
    assert watch.frames[:2] == ["untrained", "linear head (step 0)"]
    assert watch.frames[-1] == "distilled" and len(watch.frames) == 5
    assert all(v.shape == (len(watch.texts), 32) for v in watch.vectors)
    # The teacher's anchors are unit vectors; each translation points at one of them.
    assert np.allclose(np.linalg.norm(watch.teacher, axis=1), 1, atol=1e-5)
    assert sorted(set(watch.pair_ids.tolist())) == list(range(8))


def test_step_zero_is_measured_and_a_plain_head_leaves_the_journey_to_training(
    tmp_path, tiny_teacher, tiny_student
):
    """The held-out pairs are scored at step 0, after the head's start and before any step:
    with the ridge head most of the way is already made there; with the plain head (identity)
    step 0 is the untrained student, and only training moves it."""
    seen: list[str] = []
    (tmp_path / "r").mkdir()
    (tmp_path / "p").mkdir()
    ridge = distill(
        _cfg(tmp_path / "r", tiny_teacher, tiny_student, eval_pairs=10, epochs=3),
        on_eval=lambda stage, per_lang: seen.append(stage),
    ).metrics
    assert seen == ["student_untrained", "student_head"]

    def cross(m: dict, stage: str) -> float:
        return m[stage]["mean"]["cross_mean_accuracy"]

    assert cross(ridge, "student_head") > cross(ridge, "student_untrained") + 0.1
    plain = distill(
        _cfg(tmp_path / "p", tiny_teacher, tiny_student, eval_pairs=10, epochs=3, head="plain")
    ).metrics
    for key in ("cross_mean_accuracy", "student_mean_accuracy", "english_fidelity"):
        assert plain["student_head"]["mean"][key] == pytest.approx(
            plain["student_untrained"]["mean"][key], abs=1e-4
        )
    assert plain["config"]["head"] == "plain"
    # ... and training moves it toward the teacher (10 held-out pairs: accuracy moves in steps
    # of 0.05, so the squared error is the finer measure)
    mse = {k: plain[k]["mean"]["mse_x100"] for k in ("student_head", "student_distilled")}
    assert mse["student_distilled"] < 0.9 * mse["student_head"], mse
    assert cross(plain, "student_distilled") > cross(plain, "student_head")


def test_every_phase_before_the_first_step_reports_its_progress(
    tmp_path, tiny_teacher, tiny_student, isolated_cache
):
    """The encoding phases and the held-out evaluations each report (done, total) as they go,
    so a page shows where a run is before its first step."""
    seen: dict[str, list[tuple[int, int]]] = {}
    distill(
        _cfg(tmp_path, tiny_teacher, tiny_student, eval_pairs=10),
        progress=lambda phase, done, total: seen.setdefault(phase, []).append((done, total)),
    )
    for phase in (
        "teacher",
        "student cache",
        "evaluation: teacher",
        "evaluation: untrained student",
        "evaluation: step 0",
        "evaluation: distilled student",
    ):
        assert phase in seen, (phase, sorted(seen))
        done, total = seen[phase][-1]
        assert done == total > 0, (phase, seen[phase])
    assert seen["evaluation: teacher"][-1][1] == 20  # 10 held-out pairs: both sides
