"""How many personas do a user's choices support? ``python -m bayes_persona.bench evidence``.

The persona model explains a user by K personas, but whether the data *identify* more than
one is a question for the model's own evidence. Here fits with different K are compared
user by user through :func:`~bayes_persona.diagnostics.evidence.persona_count_evidence`
(each user's importance-weighted evidence bound, the items at each fit's posterior), in four
settings, on training rows only:

``control``
    A planted world built so that one vector cannot stand for two tastes: 12 tastes in 2
    dimensions, users with one or two of them (K = 1 against 2). The bound should prefer two
    personas for two-taste users and one for one-taste users; this checks the reading.
``planted``
    The demo's planted world (:func:`bayes_persona.demo.run_demo`: 6 tastes, users with 1-3 of
    them, 16 dimensions) with the demo's settings (K = 1 against 4), by planted taste count.
``ml100k``
    The ranking benchmark's validation split of ML-100K (:mod:`bayes_persona.bench`: the
    training side of the seed-0 split, split again with seed ``1 + seed``; no test row), K = 1
    and 8 at the step size and budget the ranking benchmark chose for each on that split,
    with the held-out log predictive density of the validation rows beside the bounds.
``accounts``
    The shared-account benchmark's validation split (:mod:`bayes_persona.bench.accounts`,
    ``seed``: its training rows only), default settings, K = 1, 2 and 8, with the merged
    two-person accounts apart from the users who are alone.
``ml100k_d2`` (not run by default)
    The ``ml100k`` split with personas and items in 2 dimensions, K = 1 against 4: where one
    vector is too small to hold a user's tastes, do the choices ask for personas, and do the
    personas then rank better than one (NDCG@10 of the validation rows)?

Writes into ``--out``: ``summary.csv`` (``setting, group, n_personas, n_users, prefer``: the
share of users whose bound is higher than the one-persona fit's, ``prefer_upper``: the same
with the label-switching allowance log K!, ``median_gap`` in nats and per interaction),
``users.csv.gz`` (every user's bounds), ``heldout.csv`` (per ML-100K setting and K: held-out
log predictive per interaction and NDCG@10 of the validation rows), ``summary.md`` and ``provenance.json``. About 5 minutes on one core;
``--smoke`` runs tiny versions in about a minute.
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

__all__ = ["run_evidence", "summarise", "markdown_summary", "main", "SETTINGS", "DEFAULT_SETTINGS", "ML_FITS", "LOW_D_FITS",
           "CONTROL_WORLD"]

SETTINGS = ("control", "planted", "ml100k", "accounts", "ml100k_d2")
#: What ``bench evidence`` runs unless told otherwise (``ml100k_d2`` is a run of its own).
DEFAULT_SETTINGS = ("control", "planted", "ml100k", "accounts")
#: The control world: more tastes than two dimensions can lay out pairwise (the test's world).
CONTROL_WORLD = {"n_users": 150, "n_items": 300, "n_tastes": 12, "tastes_per_user": (1, 2),
                 "interactions_per_user": (30, 50), "n_dims": 2, "multi_taste_prob": 0.0}  # fmt: skip
CONTROL_FIT = {"n_factors": 2, "batch_size": 64, "learning_rate": 0.02, "max_epochs": 300,
               "prevalence_concentration": 0.5}  # fmt: skip
#: Step size and budget per K: the ranking benchmark's choices on this validation split
#: (``paper/results/tuning.csv``, the ``chosen`` rows of Ours K=1 and K=8).
ML_FITS = {1: {"learning_rate": 0.05, "max_epochs": 1200}, 8: {"learning_rate": 0.04, "max_epochs": 225}}
#: The same split in 2 dimensions, K = 1 against 4 (K=8's step size and budget): where one
#: vector is too small to hold a user's tastes, do the choices ask for personas?
LOW_D_FITS = {1: {"learning_rate": 0.04, "max_epochs": 225, "n_factors": 2},
              4: {"learning_rate": 0.04, "max_epochs": 225, "n_factors": 2}}  # fmt: skip
ACCOUNT_KS = (1, 2, 8)
#: Bound settings: user_elbo's defaults (smoke: fewer draws, fewer users).
BOUND = {"n_particles": 32, "n_item_draws": 4}
SMOKE_BOUND = {"n_particles": 4, "n_item_draws": 1}
SMOKE_USERS = 60


def _fit(data, smoke: bool, **params):
    import bayes_persona as bp

    if smoke:
        params["max_epochs"] = min(params.get("max_epochs", 150), 3)
    return bp.PersonaRecommender(progress=False, **params).fit(data)


def _bounds(models, groups: pd.Series | None, setting: str, smoke: bool, users=None) -> pd.DataFrame:
    from bayes_persona.diagnostics.evidence import persona_count_evidence

    table = persona_count_evidence(models, users, **(SMOKE_BOUND if smoke else BOUND))
    group = "all users" if groups is None else table["user_id"].map(groups)
    return table.assign(setting=setting, group=group)


def _taste_groups(truth) -> pd.Series:
    """Each planted user's group: its number of planted tastes."""
    return truth.n_tastes_per_user.map(lambda n: f"{n} planted taste{'s' if n > 1 else ''}")


def _control(seed: int, smoke: bool) -> pd.DataFrame:
    import bayes_persona as bp

    world = dict(CONTROL_WORLD, **({"n_users": 30, "n_items": 100} if smoke else {}))
    data, truth = bp.make_synthetic(seed=seed, **world)
    models = [_fit(data, smoke, n_personas=k, random_state=seed, **CONTROL_FIT) for k in (1, 2)]
    return _bounds(models, _taste_groups(truth), "control", smoke)


def _planted(seed: int, smoke: bool) -> pd.DataFrame:
    import inspect

    import bayes_persona as bp
    from bayes_persona.demo import DEMO_EPOCHS, DEMO_MODEL, SMOKE, run_demo

    defaults = {k: v.default for k, v in inspect.signature(run_demo).parameters.items()
                if k in ("n_users", "n_items", "n_tastes", "interactions_per_user")}  # fmt: skip
    world = {k: SMOKE[k] for k in defaults} if smoke else defaults
    data, truth = bp.make_synthetic(seed=seed, **world)
    fit = {**DEMO_MODEL, "max_epochs": DEMO_EPOCHS, "random_state": seed}
    models = [_fit(data, smoke, **{**fit, "n_personas": k}) for k in (1, DEMO_MODEL["n_personas"])]
    return _bounds(models, _taste_groups(truth), "planted", smoke)


def _ml100k(seed: int, smoke: bool, data_home, fits: dict, setting: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    import bayes_persona as bp
    from bayes_persona.evaluation import evaluate

    data = bp.load_movielens("100k", data_home=data_home, download=False)
    split = bp.random_holdout(bp.binarize(data, 4.0), 0.2, seed=0)
    inner = bp.random_holdout(split.train, 0.2, seed=1 + seed)
    models = [_fit(inner.train, smoke, n_personas=k, random_state=0, **p) for k, p in fits.items()]
    users = None
    if smoke:
        users = list(models[0].user_vocab_.decode(np.arange(SMOKE_USERS)))
    bounds = _bounds(models, None, setting, smoke, users)
    rows = inner.test.ratings
    rows = rows[rows["item_id"].isin(models[0].item_vocab_.ids) & rows["user_id"].isin(models[0].user_vocab_.ids)]
    if smoke:
        rows = rows[rows["user_id"].isin(users)]
    lpd = {k: np.asarray(m.log_predictive(rows), dtype=np.float64) for k, m in zip(fits, models, strict=True)}
    k0 = min(fits)
    records = []
    for (k, v), m in zip(lpd.items(), models, strict=True):
        diff = v - lpd[k0]
        per_user = pd.Series(diff).groupby(rows["user_id"].to_numpy()).mean()
        ndcg = evaluate(m, inner.train, inner.test, k=(10,), items=data.items, metrics=["ndcg"], n_boot=0)
        records.append({
            "setting": setting, "n_personas": k, "n_factors": int(m.n_factors), "n_interactions": len(v),
            "lpd_per_interaction": float(v.mean()), "diff_vs_k1": float(diff.mean()),
            "diff_se": float(diff.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"),
            "users_higher_than_k1": float((per_user > 0).mean()) if k != k0 else float("nan"),
            "ndcg10": float(ndcg["value"].iloc[0]),
        })  # fmt: skip
    return bounds, pd.DataFrame(records)


def _accounts(seed: int, smoke: bool, data_home) -> pd.DataFrame:
    import bayes_persona as bp
    from bayes_persona.bench.accounts import _load_positives, split_accounts, validation_split
    from bayes_persona.data.accounts import ACCOUNT_COL

    merged = bp.merge_accounts(_load_positives(data_home), n_pairs=10 if smoke else 150, min_items=20,
                               balanced=True, seed=seed)  # fmt: skip
    train, truth, _ = split_accounts(merged, 0.2, seed)
    train, truth, _ = validation_split(merged, train, truth, seed)  # training rows only are used
    models = [_fit(train, smoke, n_personas=k, random_state=0) for k in ACCOUNT_KS]
    accounts = set(truth[ACCOUNT_COL].unique())
    ids = models[0].user_vocab_.decode(np.arange(len(models[0].user_vocab_)))
    users = None
    if smoke:  # every account and a few others
        users = [u for u in ids if u in accounts] + [u for u in ids if u not in accounts][:20]
    groups = pd.Series({u: "two-person accounts" if u in accounts else "single users" for u in ids})
    return _bounds(models, groups, "accounts", smoke, users)


def summarise(users: pd.DataFrame) -> pd.DataFrame:
    """Per setting, group and K above the smallest: how many users prefer that K by the bound."""
    rows = []
    for (setting, group), frame in users.groupby(["setting", "group"], sort=False):
        k0 = frame["n_personas"].min()
        for k, f in frame[frame["n_personas"] > k0].groupby("n_personas"):
            rows.append({
                "setting": setting, "group": group, "n_personas": int(k), "against": int(k0), "n_users": len(f),
                "prefer": float((f["gap"] > 0).mean()), "prefer_upper": float((f["gap_upper"] > 0).mean()),
                "median_gap": float(f["gap"].median()),
                "median_gap_per_interaction": float((f["gap"] / f["n_interactions"].clip(lower=1)).median()),
                "symmetry_allowance": float(f["symmetry_allowance"].iloc[0]),
            })  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {s: i for i, s in enumerate(users["setting"].drop_duplicates())}
    table = table.assign(_o=table["setting"].map(order)).sort_values(["_o", "group", "n_personas"], kind="stable")
    return table.drop(columns="_o").reset_index(drop=True)


def markdown_summary(summary: pd.DataFrame, heldout: pd.DataFrame | None = None) -> str:
    """The summary as a markdown table (and a held-out line per ML-100K setting)."""
    lines = [
        "| setting | users | K against | users | bound prefers the larger K | with log K! allowance | median gap (nats) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples():
        lines.append(f"| {r.setting} | {r.group} | {r.n_personas} vs {r.against} | {r.n_users} | {r.prefer:.1%} | "
                     f"{r.prefer_upper:.1%} | {r.median_gap:.2f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    if heldout is not None:
        for setting, h in heldout.groupby("setting", sort=False):
            if len(h) < 2:
                continue
            h = h.set_index("n_personas")
            k0, k = int(h.index.min()), int(h.index.max())
            text += (f"\n{setting}: validation rows ({int(h.loc[k, 'n_interactions'])}), D = {int(h.loc[k, 'n_factors'])}: "
                     f"held-out log predictive per interaction {h.loc[k0, 'lpd_per_interaction']:.4f} at K={k0}, "
                     f"{h.loc[k, 'lpd_per_interaction']:.4f} at K={k} (difference {h.loc[k, 'diff_vs_k1']:+.4f} ± "
                     f"{h.loc[k, 'diff_se']:.4f} se; {h.loc[k, 'users_higher_than_k1']:.1%} of users higher at K={k}); "
                     f"NDCG@10 {h.loc[k0, 'ndcg10']:.4f} at K={k0}, {h.loc[k, 'ndcg10']:.4f} at K={k}.\n")  # fmt: skip
    return text


def run_evidence(
    settings: Sequence[str] = DEFAULT_SETTINGS,
    out: str | Path | None = None,
    *,
    seed: int = 0,
    smoke: bool = False,
    data_home=None,
    argv: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Run the settings and write the files (see the module docstring).

    Returns
    -------
    summary : DataFrame
        The content of ``summary.csv``.
    heldout : DataFrame or None
        The ML-100K settings' held-out log predictive and NDCG@10 (None without them).
    """
    from bayes_persona.data._validation import check_min_int
    from bayes_persona.exceptions import DataValidationError
    from bayes_persona.provenance import stamp

    seed = check_min_int("seed", seed, 0)
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown or not settings:
        raise DataValidationError(f"settings must be a non-empty subset of {list(SETTINGS)}; got {list(settings)}")
    t0 = time.perf_counter()
    ml_fits = {"ml100k": ML_FITS, "ml100k_d2": LOW_D_FITS}
    frames, held, seconds = [], [], {}
    for setting in SETTINGS:
        if setting not in settings:
            continue
        t = time.perf_counter()
        if setting == "control":
            frames.append(_control(seed, smoke))
        elif setting == "planted":
            frames.append(_planted(seed, smoke))
        elif setting in ml_fits:
            bounds, h = _ml100k(seed, smoke, data_home, ml_fits[setting], setting)
            frames.append(bounds)
            held.append(h)
        else:
            frames.append(_accounts(seed, smoke, data_home))
        seconds[setting] = time.perf_counter() - t
        logger.info("evidence: %s done in %.0f s", setting, seconds[setting])
    users = pd.concat(frames, ignore_index=True)
    heldout = pd.concat(held, ignore_index=True) if held else None
    summary = summarise(users)
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        summary.to_csv(path / "summary.csv", index=False)
        users.to_csv(path / "users.csv.gz", index=False)
        if heldout is not None:
            heldout.to_csv(path / "heldout.csv", index=False)
        (path / "summary.md").write_text(markdown_summary(summary, heldout))
        prov = {
            "benchmark": "how many personas the data support (bayes_persona.bench.evidence)",
            "arguments": list(argv) if argv is not None else None, "smoke": bool(smoke), "seed": seed,
            "settings": list(settings), "control_world": {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in CONTROL_WORLD.items()},
            "control_fit": CONTROL_FIT, "ml_fits": {str(k): v for k, v in ML_FITS.items()},
            "ml_validation_split": {"split_seed": 0, "inner_seed": 1 + seed}, "account_ks": list(ACCOUNT_KS),
            "bound": SMOKE_BOUND if smoke else BOUND, "seconds": seconds, "total_seconds": time.perf_counter() - t0,
            **stamp(),
        }  # fmt: skip
        (path / "provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    return summary, heldout


def main(argv: Sequence[str] | None = None) -> int:
    import os

    ap = argparse.ArgumentParser(prog="python -m bayes_persona.bench evidence",
                                 description="How many personas the data support, user by user.")  # fmt: skip
    ap.add_argument("--out", default="paper/results/evidence", help="output folder (default paper/results/evidence)")
    ap.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                    help="comma-separated subset of: " + ", ".join(SETTINGS) + f" (default {','.join(DEFAULT_SETTINGS)})")
    ap.add_argument("--seed", type=int, default=0, help="world seed, ML-100K inner split 1 + seed, account pairs (default 0)")
    ap.add_argument("--data-home", default=os.environ.get("BAYES_PERSONA_DATA"), help="folder holding ml-100k/")
    ap.add_argument("--smoke", action="store_true", help="tiny versions (for tests)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if not settings or set(settings) - set(SETTINGS):
        ap.error(f"--settings must name some of {', '.join(SETTINGS)}; got {args.settings!r}")
    if args.seed < 0:
        ap.error(f"--seed must be a non-negative integer; got {args.seed}")
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary, heldout = run_evidence(settings, args.out, seed=args.seed, smoke=args.smoke, data_home=args.data_home,
                                    argv=list(argv) if argv is not None else None)  # fmt: skip
    print(markdown_summary(summary, heldout))
    return 0
