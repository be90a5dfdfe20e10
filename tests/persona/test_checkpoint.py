"""Checkpoints: a fit killed with SIGKILL and resumed ends exactly where an uninterrupted
fit with the same seed does (CPU); foreign or damaged checkpoints are refused."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import bayes_persona as bp
from bayes_persona.exceptions import BayesPersonaError, SaveFormatError
from bayes_persona.svi import engine as inference

# 60 users / batch 32 -> 2 steps per epoch; a checkpoint every 6 steps. With this seed the
# ELBO plateau (patience=6) stops the fit at step 28, so the early-stopping state (best
# score, bad-epoch counter) has to survive the kill as well as the parameters, the Adam
# moments, the learning-rate decay and both RNGs.
KW = dict(
    n_personas=3, n_factors=8, max_epochs=400, batch_size=32, n_draws=20, progress=False,
    patience=6, random_state=3, learning_rate=0.01, prevalence_concentration=0.1,
)  # fmt: skip
EVERY = 6
DATA_KW = dict(n_users=60, n_items=120, n_tastes=4, interactions_per_user=(10, 40), seed=0)

CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    import bayes_persona as bp
    from bayes_persona.persona.interactions import InteractionMatrix

    # Warm up (imports, torch's lazy optimizer machinery) while the parent runs other tests,
    # then wait for "go". Neither touches an RNG or a number of the fit.
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    data, _ = bp.make_synthetic(**{data_kw!r})
    real = InteractionMatrix.sample_batch

    def slow(self, *args, **kwargs):  # widens the window for the kill; changes no number
        time.sleep(0.03)
        return real(self, *args, **kwargs)

    InteractionMatrix.sample_batch = slow
    print("READY", flush=True)
    sys.stdin.readline()
    model = bp.PersonaRecommender(**{kw!r})
    model.fit(data, checkpoint_dir=sys.argv[1], checkpoint_every={every})
    print("FINISHED", flush=True)
    """
)


@pytest.fixture(scope="module", autouse=True)
def child(tmp_path_factory):
    """The fit to be killed, started (and warming up) when this module starts."""
    ckpt_dir = tmp_path_factory.mktemp("killed")
    script = CHILD.format(data_kw=DATA_KW, kw=KW, every=EVERY)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(ckpt_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        yield proc, ckpt_dir
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def checkpoint_world() -> bp.Dataset:
    checkpoint_world, _ = bp.make_synthetic(**DATA_KW)
    return checkpoint_world


@pytest.fixture(scope="module")
def reference(checkpoint_world) -> bp.PersonaRecommender:
    """The uninterrupted fit, no checkpoints."""
    return bp.PersonaRecommender(**KW).fit(checkpoint_world)


def _assert_same_fit(a: bp.PersonaRecommender, b: bp.PersonaRecommender) -> None:
    for mod_a, mod_b in ((a.guide_, b.guide_), (a.model_, b.model_)):
        sa, sb = mod_a.state_dict(), mod_b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"parameter {k} differs"
    np.testing.assert_array_equal(a.elbo_, b.elbo_)
    assert a.n_steps_ == b.n_steps_
    assert a.stopped_early_ == b.stopped_early_


def _checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["state"]["step"])


def _interrupted_fit(checkpoint_world, ckpt_dir: Path, stop_after: int, monkeypatch, **fit_kw) -> None:
    """Fit until the ``stop_after``-th checkpoint is written, then interrupt (in-process)."""
    real = inference.atomic_torch_save
    written = {"n": 0}

    def save_then_maybe_die(obj, path):
        real(obj, path)
        written["n"] += 1
        if written["n"] == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(inference, "atomic_torch_save", save_then_maybe_die)
    model = bp.PersonaRecommender(**KW)
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            checkpoint_world, checkpoint_dir=ckpt_dir, checkpoint_every=fit_kw.pop("every", EVERY), **fit_kw
        )
    monkeypatch.setattr(inference, "atomic_torch_save", real)
    with pytest.raises(bp.NotFittedError):  # an interrupted fit leaves no half-fitted model
        model.recommend(checkpoint_world.ratings["user_id"].iloc[0])


def test_resume_mid_epoch(checkpoint_world, reference, tmp_path, monkeypatch) -> None:
    """checkpoint_every=5 is not a multiple of the 2-step epoch."""
    _interrupted_fit(checkpoint_world, tmp_path, stop_after=3, monkeypatch=monkeypatch, every=5)
    assert _checkpoint_step(tmp_path / inference.CHECKPOINT_NAME) == 15
    resumed = bp.PersonaRecommender(**KW).fit(
        checkpoint_world, checkpoint_dir=tmp_path, checkpoint_every=5, resume=True
    )
    _assert_same_fit(resumed, reference)


def test_resume_after_finished_run_does_not_train_more(checkpoint_world, reference, tmp_path) -> None:
    """The final (early-stop) checkpoint is the end of the run: resuming from it (e.g. after
    a kill between that write and fit's return) gives the same model, no extra steps."""
    first = bp.PersonaRecommender(**KW).fit(checkpoint_world, checkpoint_dir=tmp_path, checkpoint_every=EVERY)
    _assert_same_fit(first, reference)
    assert reference.stopped_early_, "KW should make this fit stop early"
    again = bp.PersonaRecommender(**KW).fit(
        checkpoint_world, checkpoint_dir=tmp_path, checkpoint_every=EVERY, resume=True
    )
    _assert_same_fit(again, reference)


def test_resume_with_validation_keeps_best_state(checkpoint_world, tmp_path, monkeypatch) -> None:
    split = bp.random_holdout(checkpoint_world, seed=0)
    kw = {**KW, "max_epochs": 8}
    ref = bp.PersonaRecommender(**kw).fit(split.train, validation=split.test)
    real = inference.atomic_torch_save
    written = {"n": 0}

    def save_then_maybe_die(obj, path):
        real(obj, path)
        written["n"] += 1
        if written["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(inference, "atomic_torch_save", save_then_maybe_die)
    with pytest.raises(KeyboardInterrupt):
        bp.PersonaRecommender(**kw).fit(
            split.train, validation=split.test, checkpoint_dir=tmp_path, checkpoint_every=3
        )
    monkeypatch.setattr(inference, "atomic_torch_save", real)
    resumed = bp.PersonaRecommender(**kw).fit(
        split.train, validation=split.test, checkpoint_dir=tmp_path, checkpoint_every=3, resume=True
    )
    _assert_same_fit(resumed, ref)
    assert resumed.validation_ == ref.validation_


def test_resume_without_checkpoint_starts_fresh(checkpoint_world, reference, tmp_path) -> None:
    model = bp.PersonaRecommender(**KW).fit(
        checkpoint_world, checkpoint_dir=tmp_path / "empty", checkpoint_every=EVERY, resume=True
    )
    _assert_same_fit(model, reference)


def test_resume_false_ignores_old_checkpoint(checkpoint_world, reference, tmp_path, monkeypatch) -> None:
    _interrupted_fit(checkpoint_world, tmp_path, stop_after=2, monkeypatch=monkeypatch)
    model = bp.PersonaRecommender(**KW).fit(checkpoint_world, checkpoint_dir=tmp_path, checkpoint_every=EVERY)
    _assert_same_fit(model, reference)


# ----------------------------------------------------------------------- refusals


@pytest.fixture()
def small_checkpoint(checkpoint_world, tmp_path) -> Path:
    bp.PersonaRecommender(**{**KW, "max_epochs": 1}).fit(
        checkpoint_world, checkpoint_dir=tmp_path, checkpoint_every=1
    )
    return tmp_path


def _refused(checkpoint_world, ckpt_dir: Path, **kw) -> SaveFormatError:
    model = bp.PersonaRecommender(**{**KW, "max_epochs": 1, **kw})
    with pytest.raises(SaveFormatError) as info:
        model.fit(checkpoint_world, checkpoint_dir=ckpt_dir, checkpoint_every=1, resume=True)
    assert isinstance(info.value, BayesPersonaError)
    with pytest.raises(bp.NotFittedError):
        model.recommend(checkpoint_world.ratings["user_id"].iloc[0])
    return info.value


@pytest.mark.parametrize(
    "change", [{"n_factors": 4}, {"learning_rate": 0.123}, {"random_state": 9}]
)
def test_other_config_refused(checkpoint_world, small_checkpoint, change) -> None:
    msg = str(_refused(checkpoint_world, small_checkpoint, **change))
    assert "another model or data set" in msg


def test_other_data_refused(checkpoint_world, small_checkpoint) -> None:
    other = checkpoint_world.ratings.iloc[1:]  # one interaction fewer
    model = bp.PersonaRecommender(**{**KW, "max_epochs": 1})
    with pytest.raises(SaveFormatError, match="another model or data set"):
        model.fit(other, checkpoint_dir=small_checkpoint, checkpoint_every=1, resume=True)


def test_other_catalogue_refused(checkpoint_world, small_checkpoint) -> None:
    """``fit(catalogue=...)`` changes the items the softmax runs over: part of the fingerprint."""
    extra = np.concatenate([checkpoint_world.ratings["item_id"].unique(), [10**9]])
    model = bp.PersonaRecommender(**{**KW, "max_epochs": 1})
    with pytest.raises(SaveFormatError, match="another model or data set"):
        model.fit(checkpoint_world, checkpoint_dir=small_checkpoint, checkpoint_every=1, resume=True, catalogue=extra)


def test_other_ratings_refused_for_explicit_feedback(checkpoint_world, tmp_path) -> None:
    """Explicit feedback fits the rating values, so they are part of the fingerprint."""
    rated = checkpoint_world.ratings.assign(rating=(np.arange(len(checkpoint_world.ratings)) % 5 + 1).astype(float))
    kw = {**KW, "max_epochs": 1, "feedback": "explicit"}
    bp.PersonaRecommender(**kw).fit(rated, checkpoint_dir=tmp_path, checkpoint_every=1)
    changed = rated.assign(rating=rated["rating"].where(rated.index != 0, 0.5))
    with pytest.raises(SaveFormatError, match="another model or data set"):
        bp.PersonaRecommender(**kw).fit(
            changed, checkpoint_dir=tmp_path, checkpoint_every=1, resume=True
        )
    bp.PersonaRecommender(**kw).fit(rated, checkpoint_dir=tmp_path, checkpoint_every=1, resume=True)


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.9])
def test_truncated_checkpoint_refused(checkpoint_world, small_checkpoint, frac) -> None:
    path = small_checkpoint / inference.CHECKPOINT_NAME
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * frac)])
    _refused(checkpoint_world, small_checkpoint)


def test_unknown_checkpoint_version_refused(checkpoint_world, small_checkpoint) -> None:
    path = small_checkpoint / inference.CHECKPOINT_NAME
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["version"] = inference.CHECKPOINT_VERSION + 1
    torch.save(state, path)
    assert "unknown format" in str(_refused(checkpoint_world, small_checkpoint))


def test_non_checkpoint_file_refused(checkpoint_world, tmp_path) -> None:
    torch.save([1, 2, 3], tmp_path / inference.CHECKPOINT_NAME)
    _refused(checkpoint_world, tmp_path)


def test_checkpoint_every_validated(checkpoint_world, tmp_path) -> None:
    for bad, exc in (
        (0, bp.DataValidationError),
        (1.5, bp.DataTypeError),
        (True, bp.DataTypeError),
    ):
        with pytest.raises(exc, match="checkpoint_every"):
            bp.PersonaRecommender(**KW).fit(checkpoint_world, checkpoint_dir=tmp_path, checkpoint_every=bad)


# Last in the module, so that the child has warmed up while the tests above ran.
def test_sigkill_then_resume_is_identical(child, checkpoint_world, reference, caplog) -> None:
    proc, ckpt_dir = child
    ckpt = ckpt_dir / inference.CHECKPOINT_NAME
    ready = proc.stdout.readline()
    if b"READY" not in ready:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"child failed to start:\n{(ready + out).decode()}\n{err.decode()}")
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not ckpt.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"child ended before its first checkpoint:\n{out.decode()}\n{err.decode()}")
        if time.monotonic() > deadline:
            pytest.fail("no checkpoint within 60 s")
        time.sleep(0.005)
    time.sleep(0.1)  # land somewhere between two checkpoints
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert b"FINISHED" not in out, "the child finished before the kill; the test proves nothing"
    step = _checkpoint_step(ckpt)
    assert 0 < step < reference.n_steps_ and step % EVERY == 0
    assert reference.stopped_early_, "KW should make the fit stop early"

    caplog.set_level(logging.INFO, logger="bayes_persona.svi.engine")
    resumed = bp.PersonaRecommender(**KW).fit(
        checkpoint_world, checkpoint_dir=ckpt_dir, checkpoint_every=EVERY, resume=True
    )
    assert f"at step {step}" in caplog.text  # it did resume, not restart
    _assert_same_fit(resumed, reference)
    # a killed atomic save may leave a temp file behind, never a half-written checkpoint
    assert all(
        p.name == inference.CHECKPOINT_NAME or p.name.endswith(".tmp") for p in ckpt_dir.iterdir()
    )


def test_bit_flipped_checkpoint_refused(checkpoint_world, small_checkpoint) -> None:
    """A checkpoint carries a sha256 of its state: an edited value is refused, not resumed
    into another model (issue 18: 2 of 2 bit flips used to resume silently)."""
    path = small_checkpoint / inference.CHECKPOINT_NAME
    box = torch.load(path, map_location="cpu", weights_only=True)
    sd = box["state"]["modules"][1]
    name = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[name].view(-1)[0] += 1e-3  # one value changed, digest left as it was
    torch.save(box, path)
    assert "checksum mismatch" in str(_refused(checkpoint_world, small_checkpoint))


def test_nan_checkpoint_refused_with_its_own_message(checkpoint_world, small_checkpoint) -> None:
    """A NaN-corrupted checkpoint (digest recomputed) is refused as a damaged file, not
    blamed on the learning rate."""
    path = small_checkpoint / inference.CHECKPOINT_NAME
    box = torch.load(path, map_location="cpu", weights_only=True)
    sd = box["state"]["modules"][1]
    name = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[name].view(-1)[0] = float("nan")
    inference.save_checkpoint(box["state"], path)
    msg = str(_refused(checkpoint_world, small_checkpoint))
    assert "non-finite parameters" in msg and "learning_rate" not in msg


def test_orphan_temporaries_removed_on_start(checkpoint_world, tmp_path) -> None:
    """A kill during a checkpoint save leaves .checkpoint.pt.*.tmp; the next fit removes it."""
    orphan = tmp_path / f".{inference.CHECKPOINT_NAME}.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.tmp"  # not ours: left alone
    other.write_bytes(b"x")
    bp.PersonaRecommender(**{**KW, "max_epochs": 1}).fit(checkpoint_world, checkpoint_dir=tmp_path, checkpoint_every=1)
    assert not orphan.exists() and other.exists()
    assert (tmp_path / inference.CHECKPOINT_NAME).exists()
