"""SVI against NUTS on small planted worlds: ``python -m bayes_persona.bench nuts-planted``.

The planted-recovery reading (:func:`bayes_persona.persona_recovery`) holds the explanation
intervals to a planted world's generating probabilities. A shortfall there mixes the
variational approximation with the model itself (its priors and empirical-Bayes
hyperparameters, which a planted world was not drawn from). Here each small planted world
(:func:`bayes_persona.make_synthetic`) is fitted with the demo's settings at a size NUTS can
sample (:func:`bayes_persona.diagnostics.nuts.nuts_posterior`, the fit's hyperparameters held
fixed), and both posteriors' explanation intervals are read the same way: each draw's
personas matched to the tastes (:func:`~bayes_persona.diagnostics.recovery.matched_per_draw`),
HDI coverage on the pairs chosen by the truth and by the posterior median
(:func:`~bayes_persona.diagnostics.recovery.selection_coverage`). Where NUTS misses as SVI
does, the shortfall is the model's, not the approximation's.

Writes into ``--out``: ``coverage.csv`` (``method, seed, selection, level, hits, n_pairs,
coverage``; ``seed`` "all" pools the worlds) and ``provenance.json`` (settings, NUTS's
divergences and time, commit, versions). Three worlds take about half an hour on one core
each; ``--smoke`` runs one tiny world in seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["run_nuts_planted", "main", "WORLD", "SMOKE_WORLD"]

#: The planted worlds (small enough for NUTS) and the fit's settings over the demo's.
WORLD = {"n_users": 15, "n_items": 80, "n_tastes": 3, "interactions_per_user": (20, 40), "n_dims": 3}
FIT = {"n_personas": 3, "n_factors": 3, "max_epochs": 1500, "n_draws": 200}
NUTS = {"num_samples": 200, "warmup_steps": 300}
SMOKE_WORLD = {"n_users": 6, "n_items": 24, "n_tastes": 2, "tastes_per_user": (1, 2), "interactions_per_user": (6, 10), "n_dims": 2}
SMOKE_FIT = {"n_personas": 2, "n_factors": 2, "max_epochs": 20, "n_draws": 20}
SMOKE_NUTS = {"num_samples": 10, "warmup_steps": 10, "max_tree_depth": 4}


def run_nuts_planted(seeds: Sequence[int] = (0, 1, 2), out: str | Path | None = None, *, smoke: bool = False) -> pd.DataFrame:
    """Fit, sample by NUTS and read both posteriors' explanation intervals on each world.

    Parameters
    ----------
    seeds : sequence of int
        One planted world per seed (also the fit's and NUTS's seed).
    out : path, optional
        Folder for ``coverage.csv`` and ``provenance.json``.
    smoke : bool
        Tiny worlds and budgets (for tests).

    Returns
    -------
    DataFrame
        The content of ``coverage.csv``.
    """
    import torch

    import bayes_persona as bp
    from bayes_persona.demo import DEMO_MODEL
    from bayes_persona.diagnostics.nuts import attention_draws, nuts_posterior
    from bayes_persona.diagnostics.recovery import matched_per_draw, selection_coverage, user_truth
    from bayes_persona.provenance import stamp

    world, fit, nuts = (SMOKE_WORLD, SMOKE_FIT, SMOKE_NUTS) if smoke else (WORLD, FIT, NUTS)
    frames, info = [], {}
    t_start = time.perf_counter()
    for seed in seeds:
        data, truth = bp.make_synthetic(seed=int(seed), **world)
        model = bp.PersonaRecommender(**{**DEMO_MODEL, **fit, "progress": False, "random_state": int(seed)}).fit(data)
        draws, nuts_info = nuts_posterior(model, seed=int(seed), **nuts)
        info[str(seed)] = {**nuts_info, "svi_steps": int(model.n_steps_)}
        for uid, grp in truth.interactions.groupby("user_id", sort=False):
            u = int(model.user_vocab_.encode([uid])[0])
            items = model.item_vocab_.encode(grp["item_id"].to_numpy())
            planted, m, true_p = user_truth(truth, uid, grp)
            with torch.no_grad():
                svi = model.posterior_.explanation_draws(np.array([u]), items)[0][:, 0].cpu().numpy()
            for method, att in (("svi", svi), ("nuts", attention_draws(draws, u, items))):
                cov = selection_coverage(matched_per_draw(att, planted, m), true_p)
                frames.append(cov.assign(method=method, seed=str(seed)))
        logger.info("nuts-planted: world %s done (NUTS %.0f s, %d divergences)", seed, nuts_info["seconds"],
                    nuts_info["divergences"])  # fmt: skip
    per = pd.concat(frames).groupby(["method", "seed", "selection", "level"], as_index=False)[["hits", "n_pairs"]].sum()
    pooled = per.groupby(["method", "selection", "level"], as_index=False)[["hits", "n_pairs"]].sum().assign(seed="all")
    table = pd.concat([per, pooled], ignore_index=True)
    table["coverage"] = table["hits"] / table["n_pairs"].clip(lower=1)
    table = table[["method", "seed", "selection", "level", "hits", "n_pairs", "coverage"]]
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        table.to_csv(path / "coverage.csv", index=False)
        prov = {
            "benchmark": "SVI against NUTS on small planted worlds (bayes_persona.bench.nuts_planted)",
            "smoke": bool(smoke), "seeds": [int(s) for s in seeds], "world": {k: list(v) if isinstance(v, tuple) else v
                                                                              for k, v in world.items()},
            "fit": {**DEMO_MODEL, **fit}, "nuts": nuts, "worlds": info, "seconds": time.perf_counter() - t_start,
            **stamp(),
        }  # fmt: skip
        (path / "provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bayes_persona.bench nuts-planted",
                                 description="SVI against NUTS on small planted worlds.")  # fmt: skip
    ap.add_argument("--out", default="paper/results/nuts_planted", help="output folder (default paper/results/nuts_planted)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated world seeds (default 0,1,2)")
    ap.add_argument("--smoke", action="store_true", help="one tiny world (for tests)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds must be comma-separated integers; got {args.seeds!r}")
    if not seeds or min(seeds) < 0:
        ap.error(f"--seeds must name at least one non-negative seed; got {args.seeds!r}")
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = run_nuts_planted(seeds[:1] if args.smoke else seeds, args.out, smoke=args.smoke)
    pooled = table[table["seed"] == "all"].pivot_table(index=["method", "selection"], columns="level", values="coverage")
    print(pooled.round(3).to_string())
    return 0
