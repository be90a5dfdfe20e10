r"""NUTS as the gold standard for the variational intervals, on small prior worlds.

Variational intervals can be checked against the truth (simulation-based calibration,
:mod:`bayes_persona.diagnostics.sbc`), but a shortfall there mixes two causes: the
approximation and the simulator's departures from the likelihood. Hamiltonian Monte Carlo
(Pyro's NUTS) samples the exact posterior of the same Pyro program, with the persona
assignment summed out as in the fit, so comparing SVI's intervals with NUTS's on the same
worlds isolates the approximation: how often each covers the truth, and how much their
90% intervals overlap.

Each world is a :func:`~bayes_persona.diagnostics.sbc.simulate_prior_world` draw; SVI
fits the guides with the prior scales fixed at the simulated values; NUTS samples the
fitted model's Pyro program (the same fixed hyperparameters) on all interactions at once.
By default the worlds come from the exact simulator (independent picks, a repeated pick
counted as often as it was made), so that NUTS's intervals are calibrated against the truth
and not only a reference for SVI's.
The ranked quantities are the label-invariant ones of SBC
(:func:`~bayes_persona.diagnostics.sbc.invariant_quantities`), one set per user. Worlds
must be small: NUTS costs about a minute per world of 15 users and 80 items on one core.

References
----------
.. [1] M. D. Hoffman, A. Gelman. "The No-U-Turn Sampler". JMLR 15, 2014.
.. [2] Y. Yao, A. Vehtari, D. Simpson, A. Gelman. "Yes, but Did It Work?: Evaluating
   Variational Inference". ICML 2018.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyro
import torch

from bayes_persona.data._validation import check_min_int as _check_int
from bayes_persona.diagnostics.sbc import (
    DEFAULT_LEVELS,
    QUANTITIES,
    PriorWorld,
    _check_aligned,
    coverage_table,
    draw_picks,
    invariant_quantities,
    posterior_draws,
    simulate_prior_world,
    true_quantities,
)
from bayes_persona.exceptions import DataValidationError

__all__ = ["NutsComparison", "nuts_draws", "compare_with_nuts", "nuts_posterior", "attention_draws"]

logger = logging.getLogger(__name__)


@dataclass
class NutsComparison:
    """Coverage of SVI's and NUTS's central intervals on the same worlds, and their overlap.

    Attributes
    ----------
    intervals : DataFrame
        One row per world, user, quantity and method: ``world, user_id, quantity, method,
        true, median, low_<level>, high_<level>, covered_<level>``.
    coverage : DataFrame
        ``method, quantity, level, coverage, n, se``.
    overlap : DataFrame
        ``method, quantity, overlap, width_ratio``: mean over users of the length of the
        intersection of the method's and NUTS's 90% intervals divided by the length of
        their union, and the median ratio of the method's width to NUTS's.
    config : dict
    seconds : dict
        Wall time per method.
    """

    intervals: pd.DataFrame
    coverage: pd.DataFrame
    overlap: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _full_batch(world: PriorWorld):
    from bayes_persona.persona.model import Batch

    r = world.dataset.ratings
    counted = world.counts() is not None  # the exact simulator: each row has its count
    U = world.persona_factors.shape[0]
    groups = [g for _, g in r.groupby("user_id", sort=True)]
    L = max(len(g) for g in groups)
    items = torch.zeros(U, L, dtype=torch.long)
    mask = torch.zeros(U, L, dtype=torch.bool)
    obs_weight = torch.ones(U, L) if counted else None
    for u, g in enumerate(groups):
        items[u, : len(g)] = torch.as_tensor(g["item_id"].to_numpy(np.int64) - 1)
        mask[u, : len(g)] = True
        if counted:
            obs_weight[u, : len(g)] = torch.as_tensor(g["count"].to_numpy(np.float32))
    return Batch(torch.arange(U), items, mask, torch.ones(U), obs_weight=obs_weight)


def _sample(program: Any, batch: Any, S: int, thin: int, warmup_steps: int, max_tree_depth: int, seed: int,
            shapes: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One NUTS chain over ``program(batch)`` with its parameters held: ``S`` draws kept of
    ``S * thin``, each site reshaped to ``(S, *shapes[site])``; and ``divergences``, ``seconds``."""
    from pyro.infer import MCMC, NUTS

    saved = [prm.requires_grad for prm in program.parameters()]
    for prm in program.parameters():
        prm.requires_grad_(False)
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            pyro.set_rng_seed(seed)
            mcmc = MCMC(
                NUTS(lambda: program(batch), max_tree_depth=max_tree_depth, target_accept_prob=0.85),
                num_samples=S * thin, warmup_steps=warmup_steps, num_chains=1, disable_progbar=True,
            )  # fmt: skip
            mcmc.run()
    finally:
        for prm, req in zip(program.parameters(), saved, strict=True):
            prm.requires_grad_(req)
    smp = {k: v.detach().double().numpy() for k, v in mcmc.get_samples().items()}
    keep = np.arange(0, S * thin, thin)
    div = mcmc.diagnostics().get("divergences", {})
    n_div = int(sum(len(v) for v in div.values())) if isinstance(div, dict) else 0
    draws = {name: smp[name].reshape(-1, *shape)[keep] for name, shape in shapes.items()}
    return draws, {"divergences": n_div, "seconds": time.perf_counter() - start}


def nuts_draws(
    model: Any,
    world: PriorWorld,
    num_samples: int = 200,
    *,
    warmup_steps: int = 400,
    thin: int = 2,
    max_tree_depth: int = 8,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Exact-posterior draws by NUTS of a model fitted to a whole prior world.

    Parameters
    ----------
    model : PersonaRecommender
        Fitted with ``fit(world.dataset, catalogue=..., sample_weight=world.counts())``
        (its hyperparameters, e.g. fixed prior scales, are those NUTS uses).
    world : PriorWorld
        A world of the exact simulator (``repeats=True``) counts each row as often as it
        was picked, as the fit's ``sample_weight`` does.
    num_samples : int, default 200
        Draws kept, after thinning by ``thin``.
    warmup_steps, max_tree_depth, seed : int

    Returns
    -------
    draws : dict
        The arguments of :func:`~bayes_persona.diagnostics.sbc.invariant_quantities`
        (``log_shares`` from the drawn prevalences by the model's likelihood).
    info : dict
        ``divergences`` (count) and ``seconds``.
    """
    _check_aligned(model, world)
    S = _check_int("num_samples", num_samples, 2)
    U, K = world.persona_factors.shape[:2]
    N, D = world.item_factors.shape
    shapes = {"item_factors": (N, D), "item_bias": (N,), "persona_factors": (U, K, D), "prevalence": (U, K)}
    d, info = _sample(model.model_, _full_batch(world), S, thin, warmup_steps, max_tree_depth, seed, shapes)
    q, b, p, pi = d["item_factors"], d["item_bias"], d["persona_factors"], d["prevalence"]
    log_w = np.stack(
        [PriorWorld(None, q[s], b[s], p[s], pi[s], model.likelihood).log_shares() for s in range(S)]
    )
    return {"item_factors": q, "item_bias": b, "persona_factors": p, "log_shares": log_w}, info


def _interval_rows(world_id, picks, draws, true, method, levels):
    rows = []
    for name in QUANTITIES:
        x = draws[name]  # (S, n)
        med = np.median(x, axis=0)
        for r, u in enumerate(picks[:, 0]):
            row = {"world": world_id, "user_id": int(u) + 1, "quantity": name, "method": method,
                   "true": float(true[name][r]), "median": float(med[r])}  # fmt: skip
            for lv in levels:
                lo, hi = np.quantile(x[:, r], [(1 - lv) / 2, (1 + lv) / 2])
                tag = round(lv * 100)
                row.update({f"low_{tag}": lo, f"high_{tag}": hi, f"covered_{tag}": bool(lo <= true[name][r] <= hi)})
            rows.append(row)
    return rows


def compare_with_nuts(
    n_worlds: int = 10,
    *,
    n_users: int = 15,
    n_items: int = 80,
    n_personas: int = 3,
    n_factors: int = 2,
    interactions_per_user: tuple[int, int] = (8, 15),
    guides: Sequence[str] = ("meanfield", "lowrank"),
    num_samples: int = 200,
    warmup_steps: int = 400,
    persona_scale: float = 0.7,
    item_scale: float = 0.7,
    bias_scale: float = 0.5,
    prevalence_concentration: float = 0.5,
    max_epochs: int = 1000,
    learning_rate: float = 0.05,
    levels: Sequence[float] = DEFAULT_LEVELS,
    resample: int = 0,
    user_particles: int = 1,
    gibbs: bool = False,
    repeats: bool = True,
    random_state: int = 0,
) -> NutsComparison:
    """SVI's guides against NUTS on ``n_worlds`` small worlds from the model's own prior.

    With ``resample=M > 0`` each guide is also scored with its user draws resampled from
    ``M`` guide draws given each item draw (method ``"<guide>+resampled"``;
    :meth:`~bayes_persona.persona.posterior.PersonaPosterior.resampled_user_draws`).
    With ``user_particles=P > 1`` each guide is also fitted by the per-user
    importance-weighted bound with ``P`` draws of each user
    (:mod:`bayes_persona.svi.importance`) and scored with its own draws (method
    ``"<guide>+iw<P>"``). With ``gibbs`` every fit is also scored with the draws of the
    Gibbs sampler that uses it as its proposal
    (:func:`bayes_persona.diagnostics.refine.gibbs_draws`; method ``"<method>+gibbs"``).

    With ``repeats`` (the default) each world's picks are drawn independently, as the
    likelihood has them, and every fit and NUTS count a repeated pick as often as it was
    made (``sample_weight``; :func:`~bayes_persona.diagnostics.sbc.simulate_prior_world`):
    NUTS's intervals then cover the truth at their nominal rates, up to Monte Carlo error,
    and each method's coverage can be read against nominal as well as against NUTS's.
    ``repeats=False`` draws distinct picks, as runs before the exact simulator did.

    Returns
    -------
    NutsComparison

    Examples
    --------
    >>> res = compare_with_nuts(1, num_samples=20, warmup_steps=20, max_epochs=20)  # doctest: +SKIP
    >>> res.coverage.head()  # doctest: +SKIP
    """
    from bayes_persona.diagnostics.refine import gibbs_draws
    from bayes_persona.persona.estimator import PersonaRecommender

    R = _check_int("n_worlds", n_worlds, 1)
    seed = _check_int("random_state", random_state, 0)
    if isinstance(guides, str) or not len(guides) or any(g not in ("meanfield", "lowrank") for g in guides):
        raise DataValidationError(f"guides must be a non-empty sequence of 'meanfield'/'lowrank'; got {guides!r}")
    M = _check_int("resample", resample, 0)
    P = _check_int("user_particles", user_particles, 1)
    if not isinstance(gibbs, bool):
        raise DataValidationError(f"gibbs must be a bool; got {gibbs!r}")
    if not isinstance(repeats, bool):
        raise DataValidationError(f"repeats must be a bool; got {repeats!r}")
    lv = tuple(float(x) for x in levels)
    if 0.9 not in lv or any(not 0 < x < 1 for x in lv):
        raise DataValidationError(f"levels must be floats in (0, 1) including 0.9; got {levels!r}")
    config = dict(
        n_worlds=R, n_users=n_users, n_items=n_items, n_personas=n_personas, n_factors=n_factors,
        interactions_per_user=tuple(interactions_per_user), guides=tuple(guides), num_samples=num_samples,
        warmup_steps=warmup_steps, persona_scale=persona_scale, item_scale=item_scale, bias_scale=bias_scale,
        prevalence_concentration=prevalence_concentration, max_epochs=max_epochs, learning_rate=learning_rate,
        levels=lv, resample=M, user_particles=P, gibbs=gibbs, repeats=repeats, random_state=seed,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    divergences = 0
    for r in range(R):
        world = simulate_prior_world(
            n_users, n_items, n_personas, n_factors, interactions_per_user, persona_scale=persona_scale,
            item_scale=item_scale, bias_scale=bias_scale, prevalence_concentration=prevalence_concentration,
            repeats=repeats, seed=seed * 1_000_003 + 500_000 + r,
        )  # fmt: skip
        picks = draw_picks(world, np.random.default_rng([seed, r, 0x6075]))
        true = true_quantities(world, picks)
        fitted = None
        for g in guides:
            # the guide fitted by the ELBO (and its resampled draws), then by the bound with P
            # draws of each user: method name -> user_particles
            for method, particles in ((g, 1), *(((f"{g}+iw{P}", P),) if P > 1 else ())):
                t = time.perf_counter()
                est = PersonaRecommender(
                    n_personas=n_personas, n_factors=n_factors, guide=g, prevalence_concentration=prevalence_concentration,
                    n_prototypes=0, item_prior_scale=item_scale, persona_prior_scale=persona_scale,
                    bias_prior_scale=bias_scale, max_epochs=max_epochs, batch_size=max(n_users, 1),
                    learning_rate=learning_rate, user_particles=particles, progress=False, random_state=r,
                ).fit(world.dataset, catalogue=world.dataset.items["item_id"], sample_weight=world.counts())  # fmt: skip
                draws = invariant_quantities(**posterior_draws(est, num_samples), picks=picks)
                seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - t
                rows += _interval_rows(r, picks, draws, true, method, lv)
                if gibbs:
                    t = time.perf_counter()
                    gd = gibbs_draws(est, num_samples, random_state=r)
                    gd.pop("acceptance")
                    seconds[f"{method}+gibbs"] = seconds.get(f"{method}+gibbs", 0.0) + time.perf_counter() - t
                    rows += _interval_rows(r, picks, invariant_quantities(**gd, picks=picks), true, f"{method}+gibbs", lv)
                if particles > 1:
                    continue
                if M:
                    t = time.perf_counter()
                    draws = invariant_quantities(**posterior_draws(est, num_samples, resample=M), picks=picks)
                    seconds[f"{g}+resampled"] = seconds.get(f"{g}+resampled", 0.0) + time.perf_counter() - t
                    rows += _interval_rows(r, picks, draws, true, f"{g}+resampled", lv)
                fitted = fitted or est
        nd, info = nuts_draws(fitted, world, num_samples, warmup_steps=warmup_steps, seed=r)
        seconds["nuts"] = seconds.get("nuts", 0.0) + info["seconds"]
        divergences += info["divergences"]
        rows += _interval_rows(r, picks, invariant_quantities(**nd, picks=picks), true, "nuts", lv)
        logger.info("NUTS comparison: world %d/%d done (%d divergences)", r + 1, R, info["divergences"])
    config["divergences"] = divergences
    intervals = pd.DataFrame(rows)
    return NutsComparison(intervals, coverage_table(intervals, lv, by="method"), _overlap(intervals), config, seconds)


def _overlap(intervals: pd.DataFrame) -> pd.DataFrame:
    key = ["world", "user_id", "quantity"]
    ref = intervals[intervals["method"] == "nuts"].set_index(key)[["low_90", "high_90"]]
    out = []
    for (m, qn), grp in intervals[intervals["method"] != "nuts"].groupby(["method", "quantity"], sort=False):
        g = grp.set_index(key)[["low_90", "high_90"]].join(ref, rsuffix="_nuts")
        inter = (np.minimum(g["high_90"], g["high_90_nuts"]) - np.maximum(g["low_90"], g["low_90_nuts"])).clip(lower=0)
        union = np.maximum(g["high_90"], g["high_90_nuts"]) - np.minimum(g["low_90"], g["low_90_nuts"])
        ratio = (g["high_90"] - g["low_90"]) / (g["high_90_nuts"] - g["low_90_nuts"])
        out.append({"method": m, "quantity": qn, "overlap": float((inter / union).mean()),
                    "width_ratio": float(ratio.median())})  # fmt: skip
    return pd.DataFrame(out)


def nuts_posterior(
    model: Any,
    num_samples: int = 200,
    *,
    warmup_steps: int = 300,
    thin: int = 2,
    max_tree_depth: int = 8,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Exact-posterior draws by NUTS of a fitted model on its own training data.

    The model's Pyro program with every hyperparameter held at the fit's (prior scales,
    prototypes), and the persona assignment summed out as in the fit, sampled on all
    training interactions at once. For any data, not only prior worlds (compare
    :func:`nuts_draws`); worlds must be small (minutes for 15 users and 80 items).

    Parameters
    ----------
    model : PersonaRecommender
        Fitted with implicit feedback.
    num_samples : int, default 200
        Draws kept, after thinning by ``thin``.
    warmup_steps, thin, max_tree_depth, seed : int

    Returns
    -------
    draws : dict
        ``item_factors`` (S, N, D), ``item_bias`` (S, N), ``persona_factors`` (S, U, K, D),
        ``prevalence`` (S, U, K); users and items in the model's index order.
    info : dict
        ``divergences`` (count) and ``seconds``.
    """
    from bayes_persona.diagnostics.evidence import _full_batch

    model.posterior_  # noqa: B018 (NotFittedError before fit)
    if model.feedback != "implicit" or model.n_personas < 2:
        raise DataValidationError("nuts_posterior needs feedback='implicit' and n_personas >= 2")
    S = _check_int("num_samples", num_samples, 2)
    warmup_steps = _check_int("warmup_steps", warmup_steps, 1)
    thin = _check_int("thin", thin, 1)
    max_tree_depth = _check_int("max_tree_depth", max_tree_depth, 1)
    seed = _check_int("seed", seed, 0)
    U, N = len(model.user_vocab_), len(model.item_vocab_)
    K, D = model.n_personas, model.n_factors
    shapes = {"item_factors": (N, D), "item_bias": (N,), "persona_factors": (U, K, D), "prevalence": (U, K)}
    batch = _full_batch(model.seen_, torch.arange(U))
    return _sample(model.model_, batch, S, thin, warmup_steps, max_tree_depth, seed, shapes)


def attention_draws(draws: Mapping[str, np.ndarray], user: int, items: np.ndarray) -> np.ndarray:
    """``P(z = k | u, i)`` of the joint form in each posterior draw, shape (S, K, n).

    ``softmax_k(log pi_uk + p_uk . q_i)`` (the item bias cancels) for the user index
    ``user`` and item indices ``items``, from draws shaped as :func:`nuts_posterior`'s.
    """
    items = np.asarray(items, dtype=np.int64)
    logit = np.log(np.maximum(draws["prevalence"][:, user, :], 1e-300))[:, :, None] + np.einsum(
        "skd,snd->skn", draws["persona_factors"][:, user], draws["item_factors"][:, items]
    )
    logit -= logit.max(1, keepdims=True)
    att = np.exp(logit)
    return att / att.sum(1, keepdims=True)
