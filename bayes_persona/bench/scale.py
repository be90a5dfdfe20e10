"""Scaling benchmark: SVI cost per epoch, memory and recommendation time against data size.

Run as ``python -m bayes_persona.bench scale`` (or ``python -m bayes_persona.bench.scale``)::

    python -m bayes_persona.bench scale                        # 1e5 and 1e6 interactions
    python -m bayes_persona.bench scale --sizes 1e5 1e6 1e7    # and 1e7
    python -m bayes_persona.bench scale --movielens /work/shared/data --out scale.csv

For each size it makes planted data (:func:`planted_interactions`: users with one to three
tastes, ``--per-user`` interactions each, so the number of users grows with the size),
fits :class:`~bayes_persona.PersonaRecommender` for ``--epochs`` epochs with a sampled
softmax (``--negatives``), and reports seconds per epoch, SVI steps per second, the cost
per interaction (and that of the last epoch alone, which allocates no optimiser state and
no first snapshot), the time to recommend ``--top`` items for every user (posterior
intervals for the returned items only) and the peak resident memory
(``resource.getrusage``). Each size runs in a fresh Python process so that its peak memory
is its own. Sizes up to
``--repeat-max`` run ``--repeats`` times in interleaved rounds (1e5, 1e6, 1e7, 1e5, ...):
the run of median cost is kept, with the range of all runs, and each size's cost per
interaction over the smallest size's is taken round by round (``cost_ratio``: the median
ratio, with its lowest and highest), so that a drift of the machine's speed during the run
does not pass for a change of cost with size; every run is written beside the table
(``_runs.csv``). ``--recommend-max`` limits serving to the sizes up to it. With
``--movielens DIR`` it also fits ML-100K (binarised at 4) briefly and times recommending for
all of its users. It prints a Markdown table and writes a CSV (``--out``), with its
provenance (commit, machine, settings) beside it under the same name ending ``.json``.

Why the arithmetic per interaction is flat: an SVI step costs ``O(B L K D + B K S D)`` (``B``
users, up to ``L`` interactions each, ``S`` sampled negatives) whatever the number of
users ``U`` and items ``N`` -- the guide's user and item tables get row-sparse gradients
and lazy Adam updates (:mod:`bayes_persona.svi.optim`) once ``U > 8 B`` -- and an epoch has
``U / B`` steps, so it costs ``O(interactions)``. The time per interaction still grows with
size: at a million users the optimiser's moments and the state's snapshot are gigabytes
of fresh memory that a two-epoch fit touches once, and tables that outgrow the caches make
every scattered row a page walk; minibatch users therefore come in blocks of consecutive
rows at that size (:func:`~bayes_persona.persona.interactions.sample_users`). Memory is
``O((U K + N) D)`` for the parameters plus the interactions; nothing allocates a dense ``U x N`` matrix
(recommendation works on chunks of users, each ``O(chunk x draws x K x N)``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_persona.data import synthetic

__all__ = ["planted_interactions", "run_size", "run_movielens", "main"]

logger = logging.getLogger(__name__)

COLUMNS = [
    "dataset", "interactions", "users", "items", "epochs", "steps", "sec_per_epoch",
    "steps_per_sec", "us_per_interaction", "runs", "us_per_interaction_min",
    "us_per_interaction_max", "us_per_interaction_last_epoch", "fit_setup_sec", "recommend_users",
    "recommend_draws", "recommend_sec", "peak_rss_mb", "dense_UxN_mb",
    "cost_ratio", "cost_ratio_min", "cost_ratio_max", "ratio_rounds", "last_epoch_ratio",
]  # fmt: skip
RATIO_COLUMNS = ("runs", "us_per_interaction_min", "us_per_interaction_max", "cost_ratio", "cost_ratio_min",
                 "cost_ratio_max", "ratio_rounds", "last_epoch_ratio")  # fmt: skip


def runs_path(out: str | os.PathLike) -> Path:
    """Where every run of a scale table ``out`` is written: ``<out>`` with ``_runs.csv``."""
    out = Path(out)
    return out.with_name(out.stem + "_runs.csv")


def planted_interactions(n_interactions: int, n_items: int | None = None, seed: int = 0, **kwargs) -> pd.DataFrame:
    """:func:`bayes_persona.data.synthetic.planted_interactions` with the benchmark's
    catalogue size (:func:`default_items`) when ``n_items`` is not given."""
    n_items = default_items(n_interactions) if n_items is None else n_items
    return synthetic.planted_interactions(n_interactions, n_items, seed=seed, **kwargs)


def default_items(n_interactions: float) -> int:
    """Catalogue size for a benchmark size: ``2 sqrt(interactions)``, at least 500."""
    return int(max(500, round(2 * math.sqrt(n_interactions))))


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


class _SviTimer:
    """Wraps the fit's run_svi (in bayes_persona.persona.fitting) to time the optimisation alone."""

    def __init__(self) -> None:
        import bayes_persona.persona.fitting as rec

        self.rec, self.inner, self.seconds, self.epoch_seconds = rec, rec.run_svi, 0.0, []

    def __enter__(self) -> _SviTimer:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                result = self.inner(*args, **kwargs)
                self.epoch_seconds += result.epoch_seconds
                return result
            finally:
                self.seconds += time.perf_counter() - start

        self.rec.run_svi = timed
        return self

    def __exit__(self, *exc) -> None:
        self.rec.run_svi = self.inner


def _fit_and_time(
    name: str, ratings: pd.DataFrame, params: dict, rec_draws: int, top: int, recommend: bool
) -> dict:
    import bayes_persona as bp

    model = bp.PersonaRecommender(**params)
    start = time.perf_counter()
    with _SviTimer() as timer:
        model.fit(ratings)
    total = time.perf_counter() - start
    U, N = len(model.user_vocab_), len(model.item_vocab_)
    epochs = params["max_epochs"]
    sec_epoch = timer.seconds / epochs
    row = {
        "dataset": name,
        "interactions": len(ratings),
        "users": U,
        "items": N,
        "epochs": epochs,
        "steps": model.n_steps_,
        "sec_per_epoch": sec_epoch,
        "steps_per_sec": model.n_steps_ / timer.seconds,
        "us_per_interaction": 1e6 * sec_epoch / len(ratings),
        # The last epoch alone: no optimiser state or first snapshot to allocate.
        "us_per_interaction_last_epoch": (
            1e6 * timer.epoch_seconds[-1] / len(ratings) if len(timer.epoch_seconds) >= 2 else float("nan")
        ),
        "fit_setup_sec": total - timer.seconds,
        "recommend_users": 0,
        "recommend_draws": rec_draws,
        "recommend_sec": float("nan"),
        "dense_UxN_mb": U * N * 4 / 2**20,
    }
    if recommend:
        model.set_params(n_draws=rec_draws)
        start = time.perf_counter()
        recs = model.recommend(model.user_vocab_.ids, n=top)
        row["recommend_sec"] = time.perf_counter() - start
        row["recommend_users"] = int(recs["user_id"].nunique())
    row["peak_rss_mb"] = _peak_rss_mb()
    return row


def _model_params(args: argparse.Namespace, n_negatives: int | None) -> dict:
    return dict(
        n_personas=args.personas, n_factors=args.factors, n_negatives=n_negatives,
        batch_size=args.batch_size, max_items_per_user=128, max_epochs=args.epochs, patience=0,
        progress=False, random_state=args.seed,
    )  # fmt: skip


def run_size(n_interactions: int, args: argparse.Namespace) -> dict:
    """One planted size, in this process."""
    start = time.perf_counter()
    ratings = planted_interactions(n_interactions, per_user=tuple(args.per_user), seed=args.seed)
    gen_sec = time.perf_counter() - start
    logger.info("planted %d interactions in %.1f s", len(ratings), gen_sec)
    row = _fit_and_time(
        f"planted {n_interactions:.0e}", ratings, _model_params(args, args.negatives),
        args.rec_draws, args.top, not args.no_recommend and n_interactions <= args.recommend_max,
    )  # fmt: skip
    row["generate_sec"] = gen_sec
    return row


def run_movielens(args: argparse.Namespace) -> dict:
    """ML-100K binarised at 4, fit briefly (full softmax), recommend for every user."""
    import bayes_persona as bp

    data = bp.binarize(bp.load_movielens("100k", data_home=args.movielens, download=False), 4)
    params = _model_params(args, None)
    params["max_epochs"] = args.ml_epochs
    return _fit_and_time("ML-100K (>=4)", data.ratings, params, args.ml_draws, args.top, True)


def _child(args: argparse.Namespace, what: str) -> dict:
    """Run one benchmark row in a fresh interpreter (its own peak RSS)."""
    cmd = [sys.executable, "-m", "bayes_persona.bench.scale", "--child", what, *args.passthrough]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """The run of median cost per interaction (the lower middle one for an even count), with
    ``runs`` and the ``us_per_interaction`` range over all of them added, and the median of
    the runs' last-epoch costs (``us_per_interaction_last_epoch``, NaN if a run lacks one).

    A planted 1e5 fit has a fraction of a second of SVI, so one run is at the mercy of the
    machine's moment (on a shared 2-core VM, up to +-30% between identical runs); the
    median of a few is the figure its larger sizes are compared with."""
    costs = [r["us_per_interaction"] for r in runs]
    order = sorted(range(len(runs)), key=lambda i: costs[i])
    row = dict(runs[order[(len(runs) - 1) // 2]])
    row.update(runs=len(runs), us_per_interaction_min=min(costs), us_per_interaction_max=max(costs))
    # np.median is NaN where any run lacks a last epoch.
    row["us_per_interaction_last_epoch"] = float(np.median([r.get("us_per_interaction_last_epoch", math.nan) for r in runs]))
    return row


def cost_ratios(runs: list[dict], base: list[dict]) -> dict:
    """The cost per interaction of ``runs`` over that of ``base`` (the smallest planted size)
    round by round, for the rounds both ran: median, lowest and highest ratio; and the
    median ratio of the last epochs' costs (``last_epoch_ratio``: the fit without its one-off
    allocations, NaN unless every run had two epochs or more).

    On a shared machine the speed drifts by tens of percent within an hour; the two runs of
    a round are minutes apart, so their ratio is steadier than one of whole-run medians."""
    # strict=False: a size above --repeat-max ran in the first round only.
    pairs = [r["us_per_interaction"] / b["us_per_interaction"] for r, b in zip(runs, base, strict=False)]
    key = "us_per_interaction_last_epoch"
    # NaN (and so a NaN median) where a run lacks a last epoch.
    last = [r.get(key, math.nan) / b.get(key, math.nan) for r, b in zip(runs, base, strict=False)]
    return {"cost_ratio": float(np.median(pairs)), "cost_ratio_min": min(pairs),
            "cost_ratio_max": max(pairs), "ratio_rounds": len(pairs),
            "last_epoch_ratio": float(np.median(last))}  # fmt: skip


def _markdown(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    for c in shown.columns:
        if shown[c].dtype.kind == "f":
            shown[c] = shown[c].map(
                lambda v: "" if not np.isfinite(v) else f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
            )
    head = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bayes_persona.bench scale",
        description="SVI seconds per epoch, steps per second, peak RSS and recommendation "
        "time against the number of interactions (planted data).",
    )
    p.add_argument(
        "--sizes", nargs="+", type=float, default=[1e5, 1e6], help="interactions (default 1e5 1e6)"
    )
    p.add_argument(
        "--per-user",
        nargs=2,
        type=int,
        default=[5, 15],
        metavar=("LO", "HI"),
        help="interactions per planted user (default 5 15: 1e6 interactions = 1e5 users)",
    )
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="rounds: each round fits every planted size up to --repeat-max interactions once, "
        "in order (interleaved); the row of the median cost per interaction is kept, with the "
        "range of all runs, and each size's cost over the smallest size's, round by round (default 3)",
    )
    p.add_argument(
        "--repeat-max",
        type=float,
        default=1e6,
        help="largest size that is repeated (default 1e6: a few seconds of SVI each)",
    )
    p.add_argument("--negatives", type=int, default=256, help="sampled-softmax negatives")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--personas", type=int, default=4)
    p.add_argument("--factors", type=int, default=32)
    p.add_argument("--top", type=int, default=10, help="items recommended per user")
    p.add_argument(
        "--rec-draws", type=int, default=20, help="posterior draws for the planted recommendation"
    )
    p.add_argument("--no-recommend", action="store_true", help="skip recommending for all users")
    p.add_argument(
        "--recommend-max",
        type=float,
        default=math.inf,
        help="recommend for all users only at planted sizes up to this many interactions "
        "(default: every size)",
    )
    p.add_argument(
        "--movielens",
        metavar="DIR",
        default=None,
        help="folder holding ml-100k/: also time ML-100K (default: $BAYES_PERSONA_DATA if set)",
    )
    p.add_argument("--ml-epochs", type=int, default=20)
    p.add_argument("--ml-draws", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--inline", action="store_true", help="run every row in this process")
    p.add_argument(
        "--out", default="scale_bench.csv", help="CSV to write (default scale_bench.csv)"
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.movielens is None:
        args.movielens = os.environ.get("BAYES_PERSONA_DATA")
    if args.child is not None:  # one row, JSON on stdout
        row = (
            run_movielens(args)
            if args.child == "movielens"
            else run_size(int(float(args.child)), args)
        )
        print(json.dumps(row))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    skip = {"--inline"}
    args.passthrough = [a for a in argv if a not in skip]
    jobs = [f"{s:g}" for s in args.sizes] + (["movielens"] if args.movielens else [])
    repeated = [j for j in jobs if j != "movielens" and float(j) <= args.repeat_max]
    runs: dict[str, list[dict]] = {job: [] for job in jobs}
    # Interleaved rounds: every repeated size once per round, so that a drift of the
    # machine's speed during the run reaches all sizes alike, and a round's ratio of the
    # largest size's cost to the smallest's compares runs minutes apart.
    for rnd in range(max(1, args.repeats)):
        for job in jobs if rnd == 0 else repeated:
            logger.info("round %d: running %s ...", rnd + 1, job)
            if args.inline:
                run = run_movielens(args) if job == "movielens" else run_size(int(float(job)), args)
            else:
                run = _child(args, job)
            runs[job].append({**run, "round": rnd + 1})
    rows = []
    planted = sorted((j for j in jobs if j != "movielens"), key=float)
    base = runs[planted[0]] if planted else []
    for job in jobs:
        row = median_run(runs[job])
        if job != "movielens" and base:
            row.update(cost_ratios(runs[job], base))
        rows.append(row)
        logger.info("%s: %.2f s/epoch, %.1f steps/s, %.0f MB peak", row["dataset"], row["sec_per_epoch"],
                    row["steps_per_sec"], row["peak_rss_mb"])  # fmt: skip
    frame = pd.DataFrame(rows)[COLUMNS]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    # Every run, round by round, beside the table (same name ending _runs.csv).
    every = pd.DataFrame([r for job in jobs for r in runs[job]])
    every[["round", *[c for c in COLUMNS if c in every.columns and c not in RATIO_COLUMNS]]].sort_values(
        ["round", "interactions"]).to_csv(runs_path(args.out), index=False)  # fmt: skip
    # Beside the CSV (same name, .json): which commit, machine and settings wrote it.
    from bayes_persona.provenance import stamp

    settings = {k: v for k, v in vars(args).items() if k not in {"passthrough", "child", "inline"}}
    prov = {"benchmark": "scale (bayes_persona.bench.scale)", "settings": settings, "cpu_count": os.cpu_count(), **stamp()}
    Path(args.out).with_suffix(".json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    print(_markdown(frame))
    print(f"\nwrote {args.out}, every run in {runs_path(args.out)} and the provenance {Path(args.out).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
