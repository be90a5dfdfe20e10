"""Stochastic variational inference for any Pyro model and guide held as ``nn.Module`` s.

The engine keeps every parameter on the modules it is given, never in Pyro's global
parameter store, so two fits in one process cannot share state. It provides a tqdm progress
bar with the ELBO, early stopping (ELBO plateau or a validation score), divergence checks,
and atomic checkpoints that make a resumed fit identical to an uninterrupted one on CPU.

References
----------
.. [1] M. D. Hoffman, D. M. Blei, C. Wang, J. Paisley. "Stochastic Variational Inference".
   JMLR 14, 2013.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from bayes_persona.exceptions import ModelFitError, SaveFormatError
from bayes_persona.svi.optim import LazyClippedAdam

__all__ = ["SVIConfig", "SVIResult", "run_svi", "atomic_torch_save"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 2  # 2: carries a sha256 of its state


@dataclass
class SVIConfig:
    """Settings of :func:`run_svi`.

    Attributes
    ----------
    max_steps : int
        Upper bound on optimisation steps.
    steps_per_epoch : int
        Steps between plateau / validation checks and progress updates.
    learning_rate, clip_norm, lr_decay : float
        ClippedAdam settings; ``lr_decay`` is the factor over the whole run.
    patience : int
        Epochs without improvement before stopping (``0`` disables early stopping).
    tol : float
        Relative improvement of the validation score that counts.
    elbo_window : int
        Without a validation score, an epoch counts as an improvement when the mean ELBO of
        the last ``elbo_window`` epochs (at least 50 steps) exceeds that of as many before by more
        than two standard errors of the difference (estimated from the steps' ELBOs), so
        that minibatch noise neither stops a fit that is still rising nor prolongs one
        that has levelled off.
    progress : bool
        Show a tqdm progress bar.
    checkpoint_dir : path, optional
    checkpoint_every : int
        Steps between checkpoints.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` if there is one.
    local_particles : int
        Draws of each member of plate ``local_plate`` in the importance-weighted bound
        (:class:`~bayes_persona.svi.importance.LocalImportanceELBO`); 1 maximises the ELBO
        (Pyro's ``Trace_ELBO``).
    local_plate : str
    """

    max_steps: int = 2000
    steps_per_epoch: int = 10
    learning_rate: float = 0.05
    clip_norm: float = 10.0
    lr_decay: float = 0.1
    patience: int = 20
    tol: float = 1e-4
    elbo_window: int = 5
    progress: bool = True
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = 100
    resume: bool = False
    local_particles: int = 1
    local_plate: str = "users"


@dataclass
class SVIResult:
    """What a run produced: per-step ELBO and validation history."""

    elbo: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False
    best_step: int | None = None
    still_improving: bool = False
    best_epoch_elbo: float = -math.inf
    final_epoch_elbo: float = -math.inf
    # Wall-clock seconds of each epoch run here (not those a resumed run loaded), its end-of-
    # epoch checks, snapshot, validation and checkpoint included; the first also holds the
    # run's start (first snapshot) and the optimiser's first allocation of its state, so a
    # later epoch shows the cost without one-off work.
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def fell_from_best(self) -> bool:
        """The last epoch's mean ELBO lies below the best epoch's by more than the best's
        magnitude: the fit drifted away from its optimum (a too-large step size)."""
        best, last = self.best_epoch_elbo, self.final_epoch_elbo
        return math.isfinite(best) and last < best - max(abs(best), 1.0)


# Fewest steps behind each of the two means the ELBO rule compares: with fewer, their
# standard errors are themselves too noisy to judge a plateau (a fit shorter than twice
# this counts as still rising).
MIN_ELBO_WINDOW_STEPS = 50

# An epoch whose mean ELBO falls this many times its magnitude below the best epoch's has
# diverged (minibatch noise moves an epoch mean by a fraction of its magnitude, never 10x).
DIVERGENCE_FACTOR = 10.0


def _parameter_scale(modules: list[torch.nn.Module]) -> float:
    """The largest finite parameter magnitude (for error messages)."""
    out = 0.0
    for m in modules:
        for p in m.parameters():
            finite = p.detach()[torch.isfinite(p.detach())]
            if finite.numel():
                out = max(out, float(finite.abs().max()))
    return out


def _cause(modules: list[torch.nn.Module], learning_rate: float) -> str:
    """What a failed fit most likely met: the step size or the scale of the parameters."""
    scale = _parameter_scale(modules)
    if learning_rate > 0.1:
        return (
            f"the step size: learning_rate={learning_rate:g} is large (defaults are near 0.01); "
            f"the largest parameter magnitude reached {scale:.3g}. Try a smaller learning_rate."
        )
    return (
        f"the scale of the parameters: their largest magnitude reached {scale:.3g} at "
        f"learning_rate={learning_rate:g}. Check the scale of the data (e.g. ratings far from "
        "a few units) and init_scale, or try a smaller learning_rate."
    )


def elbo_still_rising(elbo: list[float], window: int) -> bool:
    """Whether the mean of the last ``window`` ELBOs exceeds that of the ``window`` before
    by more than two standard errors (True while there are fewer than ``2 * window``)."""
    if len(elbo) < 2 * window:
        return True
    last, prev = np.asarray(elbo[-window:]), np.asarray(elbo[-2 * window : -window])
    se = math.sqrt((last.var(ddof=1) + prev.var(ddof=1)) / window)
    return float(last.mean() - prev.mean()) > 2.0 * se


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it private; the file gets a plain file's mode
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _rng_state(gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "batch": gen.get_state()}


def _set_rng_state(gen: torch.Generator, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["batch"])


def _all_finite(modules: list[torch.nn.Module]) -> bool:
    """Whether every parameter is finite. A NaN or infinity makes a parameter's sum
    non-finite, so the sum (a reduction, no allocation) decides for the finite ones; only a
    non-finite sum (a bad value, or an overflow of finite ones) is checked element by
    element. ``torch.isfinite(p).all()`` builds a boolean copy of ``p``: about a second for a
    table of a million users."""
    with torch.no_grad():
        return all(
            bool(torch.isfinite(p.sum())) or bool(torch.isfinite(p).all())
            for m in modules
            for p in m.parameters()
        )


def run_svi(
    model: torch.nn.Module,
    guide: torch.nn.Module,
    next_batch: Callable[[torch.Generator], object],
    generator: torch.Generator,
    config: SVIConfig,
    validate: Callable[[], float] | None = None,
    fingerprint: str = "",
    sync: object | None = None,
) -> SVIResult:
    """Maximise the ELBO of ``model`` / ``guide`` over minibatches.

    Parameters
    ----------
    model, guide : nn.Module
        ``model(batch)`` and ``guide(batch)`` are a Pyro model and guide; their
        ``nn.Parameter`` s are what is optimised (the model's are empirical-Bayes
        hyperparameters).
    next_batch : callable
        ``next_batch(generator) -> batch``; all batch randomness must come from
        ``generator`` so that checkpoints can restore it.
    generator : torch.Generator
        Seeded by the caller; the global torch RNG (used by Pyro's sampling) must be seeded
        by the caller too.
    config : SVIConfig
    validate : callable, optional
        Returns a score to maximise (e.g. held-out log-likelihood); checked every epoch;
        early stopping then follows it and the best parameters are restored at the end.
    fingerprint : str
        Identifies the model and data; a checkpoint with another fingerprint is refused.
    sync : object, optional
        Data-parallel hooks (:class:`bayes_persona.svi.distributed.DataParallelSync`):
        ``sync.scope()`` is entered around each loss evaluation (it rescales the ELBO),
        ``sync.reduce_loss(loss)`` returns the loss averaged over workers (so that every
        worker takes the same early-stopping and divergence decisions),
        ``sync.reduce_grads(params)`` averages the gradients before the optimiser step, and
        only the worker with ``sync.is_writer`` writes checkpoints.

    Returns
    -------
    SVIResult

    Raises
    ------
    ModelFitError
        When the ELBO or a parameter becomes NaN or infinite (the modules are restored to
        the last good state, the start of the failing epoch), or when the fit diverges: an
        epoch's mean ELBO falls below the best epoch's by more than ``DIVERGENCE_FACTOR``
        times its magnitude (the modules are restored to that best epoch). The message names
        the step and the likely cause (step size or parameter scale). Its ``result``
        attribute holds the :class:`SVIResult` up to the failure.
    """
    epoch_start = time.perf_counter()
    modules = [model, guide]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    gamma = config.lr_decay ** (1.0 / max(config.max_steps, 1))
    # ClippedAdam; row-sparse gradients (a guide's user/item tables) get lazy O(batch) updates.
    optim = LazyClippedAdam(params, lr=config.learning_rate, clip_norm=config.clip_norm, lrd=gamma)
    if config.local_particles > 1:
        from bayes_persona.svi.importance import LocalImportanceELBO

        loss_fn = LocalImportanceELBO(config.local_particles, config.local_plate)
    else:
        loss_fn = pyro.infer.Trace_ELBO(max_plate_nesting=2)
    result = SVIResult()
    best_score, best_state, bad_epochs = -math.inf, None, 0
    ckpt_path = Path(config.checkpoint_dir) / CHECKPOINT_NAME if config.checkpoint_dir else None
    if ckpt_path is not None and (sync is None or sync.is_writer):
        remove_orphan_temporaries(ckpt_path)

    if ckpt_path is not None and config.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, fingerprint)
        for m, sd in zip(modules, state["modules"], strict=True):
            m.load_state_dict(sd)
        optim.load_state_dict(state["optim"])
        _set_rng_state(generator, state["rng"])
        result.elbo = list(state["elbo"])
        result.validation = [tuple(v) for v in state["validation"]]
        result.steps = int(state["step"])
        best_score, bad_epochs = float(state["best_score"]), int(state["bad_epochs"])
        best_state = state.get("best_state")
        result.best_step = state.get("best_step")
        result.stopped_early = bool(state.get("stopped_early", False))  # a finished run stays finished
        logger.info("resumed from %s at step %d", ckpt_path, result.steps)

    good_state, spare = snapshot_state(modules), None
    # (mean ELBO, step, state) of the best epoch so far: the divergence check's reference.
    best_epoch: tuple[float, int, list] = (-math.inf, result.steps, good_state)
    if result.steps >= config.steps_per_epoch:  # resumed: the history is the reference
        done = len(result.elbo) // config.steps_per_epoch * config.steps_per_epoch
        means = np.asarray(result.elbo[:done]).reshape(-1, config.steps_per_epoch).mean(1)
        best_epoch = (float(means.max()), result.steps, good_state)
    start_step = result.steps
    bar = tqdm(total=config.max_steps, initial=result.steps, disable=not config.progress, desc="SVI", leave=False)
    try:
        while result.steps < config.max_steps and not result.stopped_early:
            step = result.steps
            batch = next_batch(generator)
            optim.zero_grad()
            # Pyro's and torch's argument checks (supports, shapes) run on the first step of
            # every epoch; on the others they would only repeat them on new values, at about
            # a tenth of a step's time. Non-finite values are caught below either way.
            check = step % config.steps_per_epoch == 0 or step == start_step
            try:
                with sync.scope() if sync is not None else contextlib.nullcontext(), pyro.validation_enabled(
                    check and pyro.infer.util.is_validation_enabled()
                ):
                    loss = loss_fn.differentiable_loss(model, guide, batch)
            except ValueError as exc:  # a distribution's argument check met NaN/inf: divergence
                if not re.search(r"invalid values|\b(?:nan|inf)\b", str(exc), re.I) and _all_finite(modules):
                    raise
                logger.debug("non-finite values at step %d: %s", step, str(exc).splitlines()[0])
                loss = torch.tensor(math.nan)
            value = loss.detach() if sync is None else sync.reduce_loss(loss.detach())
            if not torch.isfinite(value):
                cause = _cause(modules, config.learning_rate)
                _restore(modules, good_state)
                raise ModelFitError(
                    f"the ELBO became {value.item()} at step {step}; the model keeps its state "
                    f"from before step {step - step % config.steps_per_epoch}. Likely cause: {cause}"
                )
            loss.backward()
            if sync is not None:
                sync.reduce_grads(params)
            optim.step()
            result.elbo.append(-value.item())
            result.steps = step + 1

            if result.steps % config.steps_per_epoch == 0 or result.steps == config.max_steps:
                if not _all_finite(modules):
                    cause = _cause(modules, config.learning_rate)
                    _restore(modules, good_state)
                    raise ModelFitError(
                        f"a parameter became NaN or infinite by step {result.steps}; the model "
                        f"keeps its last good state. Likely cause: {cause}"
                    )
                epoch_elbo = float(np.mean(result.elbo[-config.steps_per_epoch :]))
                if epoch_elbo < best_epoch[0] - DIVERGENCE_FACTOR * max(abs(best_epoch[0]), 1.0):
                    cause = _cause(modules, config.learning_rate)
                    _restore(modules, best_epoch[2])
                    raise ModelFitError(
                        f"the fit diverged: the mean ELBO of the epoch ending at step "
                        f"{result.steps} is {epoch_elbo:.4g}, against {best_epoch[0]:.4g} at its "
                        f"best (step {best_epoch[1]}); the model keeps its state from step "
                        f"{best_epoch[1]}. Likely cause: {cause}"
                    )
                # The snapshot of the last good state is written over unless it holds the best
                # epoch's and this epoch is no better; the best epoch's snapshot, once this
                # epoch beats it, is written over or kept for reuse. So a fit holds two
                # snapshots at most, and allocates the second only when an epoch is worse
                # than the best (for a million users a snapshot is a GB of fresh memory).
                # After the last step no state is restored from here: no snapshot.
                new_best = epoch_elbo > best_epoch[0]
                if result.steps < config.max_steps:
                    if new_best or good_state is not best_epoch[2]:
                        reuse = good_state  # this epoch supersedes it
                        if new_best and best_epoch[2] is not good_state:
                            spare = best_epoch[2]  # the old best's, free for a later snapshot
                    else:
                        reuse, spare = spare, None
                    good_state = snapshot_state(modules, reuse)
                else:
                    good_state = spare = None
                if new_best:
                    best_epoch = (epoch_elbo, result.steps, good_state)
                result.best_epoch_elbo, result.final_epoch_elbo = best_epoch[0], epoch_elbo
                bar.set_postfix(elbo=f"{epoch_elbo:.4g}")
                if validate is not None:
                    score = float(validate())
                    result.validation.append((result.steps, score))
                else:
                    score = epoch_elbo
                if validate is not None:
                    improved = not math.isfinite(best_score) or score > best_score + config.tol * abs(best_score)
                else:
                    window = max(config.elbo_window * config.steps_per_epoch, MIN_ELBO_WINDOW_STEPS)
                    improved = elbo_still_rising(result.elbo, window)
                result.still_improving = improved
                if improved:
                    best_score, bad_epochs = score, 0
                    result.best_step = result.steps
                    if validate is not None:
                        best_state = snapshot_state(modules, best_state)
                else:
                    bad_epochs += 1
                if config.patience and bad_epochs >= config.patience:
                    result.stopped_early = True
                    logger.info("early stop at step %d (best at step %s)", result.steps, result.best_step)
            if ckpt_path is not None and (sync is None or sync.is_writer) and (
                result.steps % config.checkpoint_every == 0 or result.stopped_early
            ):
                save_checkpoint(
                    {
                        "fingerprint": fingerprint,
                        "modules": [m.state_dict() for m in modules],
                        "optim": optim.state_dict(),
                        "rng": _rng_state(generator),
                        "elbo": torch.tensor(result.elbo, dtype=torch.float64),
                        "validation": [list(v) for v in result.validation],
                        "step": result.steps,
                        "best_score": best_score,
                        "bad_epochs": bad_epochs,
                        "best_state": best_state,
                        "best_step": result.best_step,
                        "stopped_early": result.stopped_early,
                    },
                    ckpt_path,
                )
            bar.update(1)
            if result.steps % config.steps_per_epoch == 0 or result.steps == config.max_steps:
                now = time.perf_counter()
                result.epoch_seconds.append(now - epoch_start)
                epoch_start = now
            if result.stopped_early:
                break
    except ModelFitError as exc:
        exc.result = result  # the history up to the failure, for the caller
        raise
    finally:
        bar.close()
    if best_state is not None:
        _restore(modules, best_state)
    return result


def snapshot_state(modules: list[torch.nn.Module], into: list[dict] | None = None) -> list[dict]:
    """A copy of the modules' state dicts, written into ``into`` (an earlier snapshot of the
    same modules) when it is given. Reusing the buffers saves allocating, and page-faulting,
    a copy of every table at every epoch: for a million users that is a few hundred MB."""
    if into is None:
        return copy.deepcopy([m.state_dict() for m in modules])
    with torch.no_grad():
        for m, saved in zip(modules, into, strict=True):
            for key, value in m.state_dict().items():
                saved[key].copy_(value)
    return into


def _restore(modules: list[torch.nn.Module], states: list[dict]) -> None:
    with torch.no_grad():
        for m, sd in zip(modules, states, strict=True):
            m.load_state_dict(sd)


def tree_digest(obj: object) -> str:
    """sha256 of a nested state (dicts, lists, tensors, scalars), independent of dict order."""
    h = hashlib.sha256()

    def walk(x: object) -> None:
        if isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, list | tuple):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).numpy().tobytes())
        else:
            h.update(f"{type(x).__name__}:{x!r}".encode())

    walk(obj)
    return h.hexdigest()


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a resumable state atomically, with its sha256 (:func:`tree_digest`)."""
    atomic_torch_save({"version": CHECKPOINT_VERSION, "sha256": tree_digest(state), "state": state}, path)


def remove_orphan_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files a killed :func:`atomic_torch_save` of ``path`` left behind
    (``.NAME.*.tmp`` beside it); returns what was removed."""
    removed = []
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    if removed:
        logger.info("removed %d orphan temporary file(s) of %s", len(removed), path)
    return removed


def load_checkpoint(path: Path, fingerprint: str) -> dict:
    """Read a checkpoint written by :func:`run_svi` (tensors and plain types only).

    Raises :class:`SaveFormatError` when it cannot be read, has another format, fails its
    sha256, belongs to another model or data set, or holds non-finite parameters."""
    try:
        box = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / not a torch file
        raise SaveFormatError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(box, dict) or box.get("version") != CHECKPOINT_VERSION or not isinstance(box.get("state"), dict):
        raise SaveFormatError(f"checkpoint {path} has an unknown format; remove it to start afresh")
    state = box["state"]
    if tree_digest(state) != box.get("sha256"):
        raise SaveFormatError(
            f"checkpoint {path}: checksum mismatch; the file was damaged or edited. Remove it "
            "to start afresh"
        )
    if state.get("fingerprint") != fingerprint:
        raise SaveFormatError(
            f"checkpoint {path} belongs to another model or data set; remove it or use another "
            "checkpoint_dir"
        )
    modules = state.get("modules")
    if not isinstance(modules, list) or not all(
        isinstance(sd, dict) and all(isinstance(v, torch.Tensor) and bool(torch.isfinite(v).all()) for v in sd.values())
        for sd in modules
    ):
        raise SaveFormatError(
            f"checkpoint {path} holds missing or non-finite parameters; remove it to start afresh"
        )
    state["elbo"] = state["elbo"].tolist()
    return state
