"""Divergence: a NaN/inf ELBO or parameter stops the fit with ModelFitError naming the step,
and the model keeps its last good (finite) state."""

from __future__ import annotations

import dataclasses
import re

import pandas as pd
import pyro
import pytest
import torch
from torch import nn

import bayes_persona as bp
from bayes_persona.exceptions import BayesPersonaError, ModelFitError
from bayes_persona.persona.interactions import InteractionMatrix
from bayes_persona.svi.engine import SVIConfig, run_svi

# `small_world` (60 users, 120 items, 4 tastes) comes from conftest.py.


def _model(**kw) -> bp.PersonaRecommender:
    params = dict(
        n_personas=3, n_factors=8, max_epochs=5, batch_size=32, n_draws=20, progress=False
    )
    return bp.PersonaRecommender(**{**params, **kw})


def _all_finite(model: bp.PersonaRecommender) -> bool:
    sd = {**model.model_.state_dict(), **model.guide_.state_dict()}
    return all(bool(torch.isfinite(v).all()) for v in sd.values())


def _step_of(msg: str) -> int:
    found = re.search(r"step (\d+)", msg)
    assert found, f"message does not name the step: {msg!r}"
    return int(found.group(1))


# ------------------------------------------------------------------- real model


def test_huge_learning_rate_raises_model_fit_error(small_world) -> None:
    model = _model(learning_rate=1e30)
    with pytest.raises(ModelFitError) as info:
        model.fit(small_world)
    assert isinstance(info.value, BayesPersonaError)
    _step_of(str(info.value))
    assert "learning_rate" in str(info.value)
    assert _all_finite(model)
    # The model is usable at its last good state: no raw errors, finite outputs.
    recs = model.recommend(small_world.ratings["user_id"].iloc[:3], n=5)
    assert recs["score"].notna().all()
    assert (
        model.explain(small_world.ratings["user_id"].iloc[0], model.item_vocab_.ids[:2])["persona_prob"]
        .notna()
        .all()
    )


def test_poisoned_batch_stops_at_that_step(small_world, monkeypatch) -> None:
    """Batch weights turn NaN at step 5 (steps_per_epoch = 2): the error names step 5 and
    the parameters are exactly those after step 4, the last completed epoch."""
    model = _model(max_epochs=5, patience=0)
    real = InteractionMatrix.sample_batch
    calls, snapshots = {"n": 0}, []

    def poisoned(self, *args, **kwargs):
        # the guide as step ``calls["n"]`` finds it (after that many updates)
        snapshots.append({k: v.detach().clone() for k, v in model.guide_.state_dict().items()})
        batch = real(self, *args, **kwargs)
        if calls["n"] == 5:  # steps count from 0
            batch = dataclasses.replace(batch, weight=torch.full_like(batch.weight, float("nan")))
        calls["n"] += 1
        return batch

    monkeypatch.setattr(InteractionMatrix, "sample_batch", poisoned)
    with pytest.raises(ModelFitError) as info:
        model.fit(small_world)
    assert _step_of(str(info.value)) == 5
    assert "before step 4" in str(info.value)
    assert _all_finite(model)
    assert not torch.equal(snapshots[5]["item_loc"], snapshots[4]["item_loc"])
    for name, value in snapshots[4].items():  # back at the end of epoch 2 (4 updates)
        assert torch.equal(model.guide_.state_dict()[name], value), name
    assert len(model.elbo_) == 5  # the history up to the failure is kept


def test_refit_after_failure_works(small_world) -> None:
    model = _model(learning_rate=1e30)
    with pytest.raises(ModelFitError):
        model.fit(small_world)
    model.set_params(learning_rate=0.05).fit(small_world)
    assert _all_finite(model)
    assert model.n_steps_ == 10


# ------------------------------------------------------------------- engine


class _ToyModel(nn.Module):
    """One parameter ``w``; the log-density is ``-tanh(w)`` summed (finite even when ``w`` is
    infinite), or NaN at step ``nan_at``."""

    def __init__(self, nan_at: int | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.nan_at, self.calls = nan_at, 0
        self.seen: list[torch.Tensor] = []  # w as each step found it

    def forward(self, batch) -> None:
        self.seen.append(self.w.detach().clone())
        factor = -torch.tanh(self.w).sum() * batch
        if self.calls == self.nan_at:
            factor = factor * float("nan")
        self.calls += 1
        pyro.factor("f", factor)


def _toy_guide() -> nn.Module:
    class Guide(nn.Module):
        def forward(self, batch) -> None:
            pass

    return Guide()


def _run(model: nn.Module, max_steps: int, lr: float = 0.1) -> None:
    gen = torch.Generator().manual_seed(0)
    cfg = SVIConfig(
        max_steps=max_steps, steps_per_epoch=3, learning_rate=lr, patience=0, progress=False
    )
    with pyro.validation_enabled(False):  # the engine itself must catch the NaN
        run_svi(model, _toy_guide(), lambda g: torch.rand((), generator=g) + 0.5, gen, cfg)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_engine_nan_elbo_names_step_and_restores_epoch_start() -> None:
    poisoned = _ToyModel(nan_at=7)
    with pytest.raises(ModelFitError) as info:
        _run(poisoned, max_steps=30)
    assert "at step 7" in str(info.value)
    assert "before step 6" in str(info.value)
    assert not torch.equal(poisoned.seen[7], poisoned.seen[6])  # step 6 did move w ...
    assert torch.equal(poisoned.w, poisoned.seen[6])  # ... and was rolled back to the epoch start
    assert len(info.value.result.elbo) == 7


@pytest.mark.filterwarnings("ignore:Encountered NaN")
@pytest.mark.parametrize("nan_at", [3, 4])
def test_engine_nan_caught_by_pyro_validation_is_a_model_fit_error(nan_at) -> None:
    """With Pyro's argument validation on, a NaN log-factor raises ValueError inside Pyro
    (step 3 starts an epoch, where the engine keeps the checks on); the engine turns it
    into ModelFitError, as it does for the NaN ELBO of a step without the checks (4)."""
    poisoned = _ToyModel(nan_at=nan_at)
    gen = torch.Generator().manual_seed(0)
    cfg = SVIConfig(max_steps=30, steps_per_epoch=3, patience=0, progress=False)
    with pyro.validation_enabled(True), pytest.raises(ModelFitError, match=f"at step {nan_at}"):
        run_svi(poisoned, _toy_guide(), lambda g: torch.ones(()), gen, cfg)
    assert torch.isfinite(poisoned.w).all()


@pytest.mark.parametrize("globally", [True, False])
def test_engine_validates_the_first_step_of_each_epoch_only(globally) -> None:
    """Pyro's argument checks run on the first step of the run and of every epoch, and
    never when the caller turned validation off."""
    seen = []

    class Probe(_ToyModel):
        def forward(self, batch) -> None:
            seen.append(pyro.infer.util.is_validation_enabled())
            super().forward(batch)

    gen = torch.Generator().manual_seed(0)
    cfg = SVIConfig(max_steps=8, steps_per_epoch=3, patience=0, progress=False)
    with pyro.validation_enabled(globally):
        run_svi(Probe(), _toy_guide(), lambda g: torch.ones(()), gen, cfg)
        assert pyro.infer.util.is_validation_enabled() is globally  # restored
    expected = [s % 3 == 0 and globally for s in range(8)]
    assert seen == expected


def test_engine_infinite_parameter_with_finite_elbo() -> None:
    """lr=1e39 overflows float32: ``w`` becomes infinite while ``tanh`` keeps the ELBO
    finite; the per-epoch parameter check catches it and restores the start of the run."""
    model = _ToyModel()
    with pytest.raises(ModelFitError, match=r"parameter became NaN or infinite by step 3"):
        _run(model, max_steps=30, lr=1e39)
    assert torch.equal(model.w, torch.zeros(3))


def test_engine_unrelated_value_error_is_not_masked() -> None:
    """A ValueError that is not about non-finite values (a bug) propagates as it is."""

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, batch) -> None:
            raise ValueError("shape mismatch in the model")

    gen = torch.Generator().manual_seed(0)
    cfg = SVIConfig(max_steps=3, steps_per_epoch=1, progress=False)
    with pytest.raises(ValueError, match="shape mismatch") as info:
        run_svi(Broken(), _toy_guide(), lambda g: None, gen, cfg)
    assert not isinstance(info.value, ModelFitError)


def test_failed_fit_can_be_saved_and_loaded(small_world, tmp_path) -> None:
    model = _model(learning_rate=1e30)
    with pytest.raises(ModelFitError):
        model.fit(small_world)
    assert len(model.elbo_) == model.n_steps_  # the steps run before the failure
    model.save(tmp_path / "m.pt")
    loaded = bp.PersonaRecommender.load(tmp_path / "m.pt")
    u = small_world.ratings["user_id"].iloc[0]
    pd.testing.assert_frame_equal(loaded.recommend(u, n=3), model.recommend(u, n=3))


class _Runaway(nn.Module):
    """Log-density ``-(w - 1)^2`` for ``diverge_at`` steps, then ``-10^step`` times that: the
    ELBO collapses by orders of magnitude while every value stays finite."""

    def __init__(self, diverge_at: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.diverge_at, self.calls = diverge_at, 0

    def forward(self, batch) -> None:
        base = -((self.w - 1.0) ** 2).sum() - 1.0
        if self.calls >= self.diverge_at:
            base = base * 10.0 ** (self.calls - self.diverge_at + 2)
        self.calls += 1
        pyro.factor("f", base)


def test_engine_finite_divergence_raises_and_restores_best_epoch() -> None:
    """A finite ELBO that falls 10x below its best epoch is a divergence: ModelFitError
    names the step, the best epoch and a cause, and the parameters are the best epoch's."""
    model = _Runaway(diverge_at=9)
    gen = torch.Generator().manual_seed(0)
    cfg = SVIConfig(max_steps=60, steps_per_epoch=3, learning_rate=0.05, patience=0, progress=False)
    with pytest.raises(ModelFitError, match=r"diverged.*step 12.*best \(step 9\)") as info:
        run_svi(model, _toy_guide(), lambda g: None, gen, cfg)
    assert "Likely cause" in str(info.value)
    assert len(info.value.result.elbo) == 12
    # w after step 9 (3 epochs of lr 0.05 towards 1): positive, finite, and not moved since
    assert 0.0 < float(model.w.detach()) < 1.0


def test_engine_healthy_run_is_not_called_divergent() -> None:
    model = _Runaway(diverge_at=10**9)
    gen = torch.Generator().manual_seed(0)
    cfg = SVIConfig(max_steps=60, steps_per_epoch=3, learning_rate=0.05, patience=0, progress=False)
    result = run_svi(model, _toy_guide(), lambda g: None, gen, cfg)
    assert not result.fell_from_best
    assert result.final_epoch_elbo >= result.best_epoch_elbo - 1e-3


def test_too_large_learning_rate_warns_and_is_not_converged(small_world) -> None:
    """learning_rate=1 keeps every value finite but leaves the ELBO far below its best: the
    fit warns (ConvergenceWarning naming the learning rate) and converged_ is False."""
    model = _model(learning_rate=1.0, max_epochs=15)
    with pytest.warns(bp.ConvergenceWarning, match="learning_rate=1 is likely too large"):
        model.fit(small_world)
    assert model.converged_ is False
    ok = _model(learning_rate=0.01, max_epochs=15)
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ok.fit(small_world)
    assert not any("drifted" in str(w.message) for w in seen)


@pytest.mark.parametrize(
    ("values", "finite"),
    [
        ([1.0, -2.0, 3.0], True),
        ([3e38, 3e38, 3e38], True),  # the sum overflows; every value is finite
        ([-3e38, -3e38], True),
        ([1.0, float("nan"), 2.0], False),
        ([1.0, float("inf")], False),
        ([float("inf"), float("-inf")], False),  # the sum is NaN
        ([-float("inf"), 0.0], False),
    ],
)
def test_engine_finiteness_check_reads_every_value(values, finite):
    from bayes_persona.svi.engine import _all_finite as engine_all_finite

    module = nn.Module()
    module.ok = nn.Parameter(torch.ones(3, 2))
    module.table = nn.Parameter(torch.tensor(values, dtype=torch.float32))
    assert engine_all_finite([module]) is finite


class _Decline(nn.Module):
    """Log-density ``-(w - 1)^2 - 1``, lowered by ``step - 8`` halves from step 9 on: ``w``
    keeps moving while every epoch after the one ending at step 9 is worse, until the fall
    passes the divergence threshold. ``seen[n]`` is ``w`` after ``n`` steps."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen: list[float] = []

    def forward(self, batch) -> None:
        n = len(self.seen)
        self.seen.append(float(self.w.detach()))
        pyro.factor("f", -((self.w - 1.0) ** 2).sum() - 1.0 - 0.5 * max(n - 8, 0))


def test_engine_restores_best_epoch_exactly_after_worse_epochs() -> None:
    """The per-epoch snapshots reuse their buffers: after many worse epochs (each written over
    the last good state's buffers), a divergence restores the best epoch's values exactly."""
    model = _Decline()
    gen = torch.Generator().manual_seed(0)
    cfg = SVIConfig(max_steps=300, steps_per_epoch=3, learning_rate=0.05, patience=0, progress=False)
    with pytest.raises(ModelFitError, match=r"diverged.*best \(step 9\)") as info:
        run_svi(model, _toy_guide(), lambda g: None, gen, cfg)
    assert len(info.value.result.elbo) > 20  # several worse epochs came between
    assert float(model.w.detach()) == model.seen[9]
    assert model.seen[9] != model.seen[-1]


class _Scripted(nn.Module):
    """Log-density ``-(w - 1)^2 + level[epoch]`` (3 steps an epoch): ``w`` moves at every
    step while the script decides which epochs are better or worse than the best so far.
    ``seen[n]`` is ``w`` after ``n`` steps."""

    def __init__(self, levels: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.levels, self.seen = levels, []

    def forward(self, batch) -> None:
        n = len(self.seen)
        self.seen.append(float(self.w.detach()))
        pyro.factor("f", -((self.w - 1.0) ** 2).sum() + self.levels[n // 3])


@pytest.mark.parametrize(
    "levels, best_epoch",
    [
        ([-10, -5, -8, -4, -6, -7, -9, -3, -5, -1e4], 7),  # better, worse, better, ... then falls
        ([-10, -9, -8, -7, -6, -1e4], 4),  # every epoch better, then falls
        ([-1, -2, -3, -1.5, -1e4], 0),  # the first epoch stays the best
        ([-5, -4, -6, -3, -7, -2, -8, -1, -1e4], 7),  # alternating
    ],
)
def test_engine_snapshots_restore_the_best_epoch_whatever_the_order(
    levels, best_epoch, monkeypatch
) -> None:
    """Snapshots are written over as epochs come (two at most): whatever the order of better
    and worse epochs, a divergence restores exactly the best epoch's values."""
    from bayes_persona.svi import engine

    fresh = []
    real = engine.snapshot_state
    monkeypatch.setattr(
        engine,
        "snapshot_state",
        lambda m, into=None: (fresh.append(into is None), real(m, into))[1],
    )
    model = _Scripted(levels)
    cfg = SVIConfig(
        max_steps=3 * len(levels), steps_per_epoch=3, learning_rate=0.05, patience=0, progress=False
    )
    with pytest.raises(ModelFitError, match=rf"diverged.*best \(step {3 * (best_epoch + 1)}\)"):
        run_svi(model, _toy_guide(), lambda g: None, torch.Generator().manual_seed(0), cfg)
    assert float(model.w.detach()) == model.seen[3 * (best_epoch + 1)]
    assert model.seen[3 * (best_epoch + 1)] != model.seen[-1]
    # The snapshot before the first step, and a second one only once an epoch was worse.
    worse_seen = any(levels[e] <= max(levels[:e]) for e in range(1, len(levels) - 1))
    assert sum(fresh) == (2 if worse_seen else 1)


@pytest.mark.parametrize("epochs", [1, 2])
def test_engine_runs_of_one_and_two_epochs_finish(epochs) -> None:
    """The snapshot bookkeeping at the last epoch's end (no snapshot then) holds when that
    epoch is also the first."""
    model = _Scripted([-3.0, -2.0])
    cfg = SVIConfig(max_steps=3 * epochs, steps_per_epoch=3, learning_rate=0.05, patience=0, progress=False)
    result = run_svi(model, _toy_guide(), lambda g: None, torch.Generator().manual_seed(0), cfg)
    assert result.steps == 3 * epochs and len(model.seen) == 3 * epochs


def test_engine_times_each_epoch_it_runs() -> None:
    """One wall-clock time per epoch (a last, partial epoch included), within the run's time."""
    import time

    model = _Scripted([-3.0, -2.0, -1.0])
    cfg = SVIConfig(max_steps=7, steps_per_epoch=3, learning_rate=0.05, patience=0, progress=False)
    start = time.perf_counter()
    result = run_svi(model, _toy_guide(), lambda g: None, torch.Generator().manual_seed(0), cfg)
    total = time.perf_counter() - start
    assert len(result.epoch_seconds) == 3  # steps 1-3, 4-6, 7
    assert all(s > 0 for s in result.epoch_seconds)
    assert sum(result.epoch_seconds) <= total
