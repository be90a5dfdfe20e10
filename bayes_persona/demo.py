"""The ``bayes-persona demo``: fit on planted-persona data and compare with the truth.

:func:`run_demo` draws users with known tastes (:func:`bayes_persona.make_synthetic`), fits a
:class:`~bayes_persona.PersonaRecommender`, and prints for a few users their fitted personas
(prevalence with its credible interval, top categories) beside the planted tastes and
weights, then their top recommendations, each with the persona that explains it and that
probability's interval. It ends with the persona-recovery figures of
:func:`bayes_persona.persona_recovery` over all users.

>>> from bayes_persona.demo import SMOKE, run_demo
>>> result = run_demo(**SMOKE, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import pandas as pd

__all__ = ["run_demo", "DemoResult", "DEMO_MODEL", "DEMO_EPOCHS", "SMOKE"]

#: Model settings of the demo and of the planted recovery (the rest are PersonaRecommender's
#: defaults): four personas for users with at most three planted tastes show unused personas
#: fading to near-zero prevalence; a planted world has a few hundred users, so minibatches of
#: 64 at learning rate 0.01 (more, smaller steps per epoch than the ML-100K defaults), and
#: the sparser prevalence prior (0.1) that prunes the unused personas of a planted world.
DEMO_MODEL: dict[str, Any] = {
    "n_personas": 4, "batch_size": 64, "learning_rate": 0.01, "prevalence_concentration": 0.1,
}  # fmt: skip
#: SVI epochs of the demo (the default budget).
DEMO_EPOCHS = 300
#: Arguments of :func:`run_demo` for a run of a few seconds (``bayes-persona demo --smoke``).
SMOKE: dict[str, Any] = {
    "n_users": 40,
    "n_items": 80,
    "n_tastes": 3,
    "epochs": 40,
    "n_show": 1,
    "interactions_per_user": (10, 30),
    "n_draws": 20,
}


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` fitted and measured."""

    model: Any
    dataset: Any
    truth: Any
    recovery: Any
    users: list
    fit_seconds: float
    seconds: float


def run_demo(
    n_users: int = 500,
    n_items: int = 800,
    n_tastes: int = 6,
    seed: int = 0,
    n_show: int = 3,
    epochs: int | None = None,
    out: TextIO | None = None,
    *,
    interactions_per_user: tuple[int, int] = (20, 60),
    n_draws: int | None = None,
    n_recommend: int = 5,
    progress: bool = True,
) -> DemoResult:
    """Fit on planted-persona data and print personas, explanations and recovery figures.

    Parameters
    ----------
    n_users, n_items, n_tastes : int
        Size of the synthetic world (:func:`~bayes_persona.make_synthetic`).
    seed : int
        Seed of the data and of the model.
    n_show : int
        Users to describe (alternately ones with 3, 2 and 1 planted tastes).
    epochs : int, optional
        Maximum SVI epochs; default :data:`DEMO_EPOCHS`.
    out : text stream, default ``sys.stdout``
    interactions_per_user : (int, int)
    n_draws : int, optional
        Posterior draws behind intervals (default: the model's).
    n_recommend : int
        Recommendations shown per user.
    progress : bool
        Show the fitting progress bar.

    Returns
    -------
    DemoResult
    """
    import bayes_persona as bp

    out = out if out is not None else sys.stdout
    start = time.perf_counter()

    def say(text: str = "") -> None:
        out.write(f"{text}\n")
        out.flush()

    data, truth = bp.make_synthetic(
        n_users=n_users,
        n_items=n_items,
        n_tastes=n_tastes,
        seed=seed,
        interactions_per_user=interactions_per_user,
    )
    say(
        f"Planted-persona data: {data.n_users} users, {data.n_items} items, {n_tastes} tastes "
        f"({', '.join(truth.taste_names)}); {data.n_interactions:,} interactions. Each user has "
        f"{_tastes_range(truth)} planted tastes with known weights."
    )
    settings = dict(
        DEMO_MODEL, max_epochs=epochs or DEMO_EPOCHS, random_state=seed, progress=progress
    )
    if n_draws is not None:
        settings["n_draws"] = n_draws
    model = bp.PersonaRecommender(**settings)
    say(
        f"Fitting PersonaRecommender(n_personas={model.n_personas}, n_factors={model.n_factors}) "
        f"by SVI, at most {model.max_epochs} epochs ..."
    )
    t0 = time.perf_counter()
    model.fit(data)
    fit_seconds = time.perf_counter() - t0
    say(
        f"  done in {fit_seconds:.1f} s: {model.n_steps_} steps"
        f"{' (stopped early: the ELBO stopped improving)' if model.stopped_early_ else ''}."
    )
    say(f"Measuring persona recovery against the planted truth for all {data.n_users} users ...")
    recovery = bp.persona_recovery(model, truth, hdi_prob=model.hdi_prob)

    users = _pick_users(truth, n_show)
    categories = _item_categories(data.items)
    ratings = data.ratings
    for user in users:
        seen = ratings.loc[ratings["user_id"] == user, "item_id"].to_numpy()
        say()
        say(_describe_user(model, truth, recovery, categories, user, seen, n_recommend))

    say()
    say(f"Persona recovery over all {len(recovery.per_user)} users:")
    say(f"  {recovery.summary()}")
    say(
        f"  assignment accuracy  {recovery.assignment_accuracy:6.1%}  (interactions assigned to the matching persona)"
    )
    say(
        f"  count accuracy       {recovery.count_accuracy:6.1%}  (users with as many personas above "
        f"{recovery.prevalence_threshold:g} as planted tastes)"
    )
    say(
        f"  interval coverage    {recovery.interval_coverage:6.1%}  ({recovery.hdi_prob:.0%} intervals "
        "covering the generating probability)"
    )
    seconds = time.perf_counter() - start
    say(f"Demo finished in {seconds:.0f} s.")
    return DemoResult(model, data, truth, recovery, users, fit_seconds, seconds)


# --------------------------------------------------------------------------- formatting
def _tastes_range(truth: Any) -> str:
    counts = truth.n_tastes_per_user
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def _pick_users(truth: Any, n_show: int) -> list:
    """Users to show: alternately the next user with the most, fewer, ... planted tastes."""
    counts = truth.n_tastes_per_user
    levels = sorted(counts.unique(), reverse=True)
    queues = {m: list(counts.index[counts == m]) for m in levels}
    picked: list = []
    while len(picked) < min(n_show, len(counts)):
        for m in levels:
            if queues[m] and len(picked) < n_show:
                picked.append(queues[m].pop(0))
    return [_plain(u) for u in picked]


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _item_categories(items: pd.DataFrame | None) -> dict:
    if items is None or "categories" not in items.columns:
        return {}
    return dict(zip(items["item_id"].map(_plain), items["categories"], strict=True))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _interval(low: float, high: float) -> str:
    return f"[{low:.2f}, {high:.2f}]"


def _table(rows: list[list[str]], indent: str = "    ") -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join(
        indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )


def _category_shares(model: Any, user: Any, seen: np.ndarray, categories: dict) -> dict[int, list]:
    """For each persona, its categories by share of the persona's expected interactions
    among the user's training items (an item's weight split evenly over its categories)."""
    expl = model.explain(user, seen)
    acc: dict[int, dict[str, float]] = {}
    for item, persona, prob in zip(expl["item_id"], expl["persona"], expl["persona_prob"], strict=True):
        cats = categories.get(_plain(item)) or ["(none)"]
        bucket = acc.setdefault(int(persona), {})
        for c in cats:
            bucket[c] = bucket.get(c, 0.0) + prob / len(cats)
    out = {}
    for persona, bucket in acc.items():
        total = sum(bucket.values()) or 1.0
        out[persona] = sorted(((c, w / total) for c, w in bucket.items()), key=lambda cw: -cw[1])
    return out


def _describe_user(
    model: Any, truth: Any, recovery: Any, categories: dict, user: Any, seen: np.ndarray, n: int
) -> str:
    hdi = f"{model.hdi_prob:.0%}"
    planted = truth.user_tastes[truth.user_tastes["user_id"] == user].sort_values(
        "weight", ascending=False
    )
    lines = [
        f"User {user}: planted tastes "
        + ", ".join(
            f"{t} {w:.2f}" for t, w in zip(planted["taste"], planted["weight"], strict=True)
        )
    ]
    threshold = recovery.prevalence_threshold
    personas = model.personas(user)
    shares = _category_shares(model, user, seen, categories) if categories else {}
    rows = [["", "prevalence", f"{hdi} interval", "categories of the items it explains"]]
    for p in personas.itertuples(index=False):
        top = [f"{c} {w:.0%}" for c, w in shares.get(int(p.persona), [])[:3] if w >= 0.05]
        cats = ", ".join(top or p.top_categories) or "-"
        if not p.active:
            cats = f"(unused: prevalence at most {threshold:g})"
        rows.append(
            [
                f"persona {p.persona}",
                f"{p.prevalence:.2f}",
                _interval(p.prevalence_low, p.prevalence_high),
                cats,
            ]
        )
    lines += ["  Fitted personas:", _table(rows)]
    per_user = recovery.per_user
    mine = per_user[per_user["user_id"] == user]
    if len(mine):
        r = mine.iloc[0]
        lines.append(
            f"  Recovery: {_plural(int(r['n_found']), 'persona')} above {threshold:g} for "
            f"{_plural(int(r['n_planted']), 'planted taste')}; {r['accuracy']:.0%} of this user's "
            "interactions assigned to the matching persona."
        )
    recs = model.recommend([user], n=n)
    rows = [["rank", "item", "categories", "persona", "P(persona | item)", f"{hdi} interval"]]
    for r in recs.itertuples(index=False):
        rows.append(
            [
                f"{r.rank}.",
                str(r.item_id),
                ", ".join(categories.get(_plain(r.item_id), [])) or "-",
                str(r.persona),
                f"{r.persona_prob:.2f}",
                _interval(r.persona_prob_low, r.persona_prob_high),
            ]
        )
    lines += [
        f"  Top {len(recs)} recommendations, each with the persona that explains it:",
        _table(rows),
    ]
    return "\n".join(lines)
