"""Accuracy benchmark on MovieLens 100K: ``python -m bayes_persona.bench``.

Protocol: ratings >= 4 are positives; per-user random 80/20 split (seed 0); a validation
split is cut from train the same way and used, never the test split, to tune baselines;
models are then refit on the whole train split and evaluated by full ranking over the
catalogue with seen items excluded (plus the sampled 1-vs-99 protocol of AMP-CF / NCF,
labelled as such). A second protocol, ``temporal``, holds out each user's latest positive
(leave-last-out by timestamp), refits every model with the hyperparameters tuned above
and ranks the full catalogue again. Each model runs in a fresh process so that its peak
memory (max RSS) is its own.

Writes ``results.csv`` (tidy: model, protocol, metric, k, value, low, high) and
``results.md`` (one row per model) into ``--out``.

``python -m bayes_persona.bench scale [...]`` runs the cost benchmark instead
(:mod:`bayes_persona.bench.scale`: seconds per epoch, steps per second and peak memory on
planted data of growing size).

``python -m bayes_persona.bench accounts [...]`` runs the shared-account attribution
benchmark (:mod:`bayes_persona.bench.accounts`).

``python -m bayes_persona.bench sbc [--replications 100]`` runs the simulation-based
calibration of the guides (:mod:`bayes_persona.bench.sbc`); ``python -m bayes_persona.bench
nuts`` compares their intervals with NUTS's on small worlds (:mod:`bayes_persona.bench.nuts`), and
``python -m bayes_persona.bench nuts-planted`` on small planted worlds (:mod:`bayes_persona.bench.nuts_planted`).

``python -m bayes_persona.bench costs [...]`` times the tuned models alone on an idle
machine with two threads (:mod:`bayes_persona.bench.costs`).

``python -m bayes_persona.bench all [--out paper/results]`` runs every result file of the
paper, one after the other (:func:`run_all`), the costs last and alone.

``python -m bayes_persona.bench fuzz [--cases 500]`` runs the robustness fuzz
(:mod:`bayes_persona.bench.fuzz`: raw exceptions, hangs and silent wrong results).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_persona.provenance import stamp

logger = logging.getLogger(__name__)

TUNING_GRIDS = {
    "EASE": {"l2": [100.0, 300.0, 500.0, 1000.0]},
    "iALS": {"factors": [128, 256, 512], "regularization": [10.0, 30.0, 100.0, 300.0], "alpha": [5.0, 10.0, 20.0, 40.0], "iterations": [15]},
    "BPR-MF": {"factors": [256, 512, 1024], "lr": [0.005, 0.01, 0.02, 0.05], "reg": [3e-3, 1e-2, 3e-2], "epochs": [50]},
    # AMP-CF: step size, attention sharpness a, the weight lambda of both entropy terms
    # (0.005 in the authors' notebook) and dimension d; 20 epochs per configuration, then the epoch count
    # is found by early stopping on the validation split.
    "AMP-CF": {"lr": [3e-4, 1e-3, 3e-3], "a": [0.1, 0.25, 0.5], "lambda": [0.001, 0.005, 0.1],
               "factors": [32, 64, 128], "max_epochs": [20]},
    # Ours: the step size and the budget (the model's other settings are its defaults).
    # (batch_size 512, the default: 2 steps per epoch on ML-100K)
    # (the earlier grids' choices sat at their edges: K=8 at lr 0.04 and 225 epochs, K=1 at
    # 1200 epochs; these grids hold each choice's neighbours on both sides)
    "Ours K=1": {"learning_rate": [0.02, 0.05, 0.1], "max_epochs": [600, 1200, 2400]},
    "Ours K=8": {"learning_rate": [0.02, 0.04, 0.06], "max_epochs": [150, 225, 300]},
}

MODELS = ("MostPopular", "EASE", "iALS", "BPR-MF", "AMP-CF", "Ours K=1", "Ours K=8")


def _data(data_home: str | None):
    import bayes_persona as bp

    data = bp.load_movielens("100k", data_home=data_home, download=False)
    pos = bp.binarize(data, 4.0)
    split = bp.random_holdout(pos, 0.2, seed=0)
    inner = bp.random_holdout(split.train, 0.2, seed=1)
    return data.items, split, inner


def _temporal_data(data_home: str | None):
    """The second protocol: each user's latest positive held out (leave-last-out by time)."""
    import bayes_persona as bp

    data = bp.load_movielens("100k", data_home=data_home, download=False)
    return bp.leave_one_out(bp.binarize(data, 4.0), by="time")


#: The benchmark's labels of the baselines, and their names in :data:`bayes_persona.baselines.BASELINES`.
BASELINE_NAMES = {"MostPopular": "popular", "EASE": "ease", "iALS": "ials", "BPR-MF": "bpr", "AMP-CF": "ampcf"}


def _make(name: str, params: dict, smoke: bool):
    from bayes_persona import PersonaRecommender
    from bayes_persona.baselines import BASELINES

    if name.startswith("Ours"):
        k = int(name.split("K=")[1])
        budget = {"max_epochs": 5} if smoke else {}  # otherwise the defaults (early stopping)
        return PersonaRecommender(n_personas=k, progress=False, **{**params, **budget})
    if name not in BASELINE_NAMES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    p = dict(params)
    if name == "BPR-MF" and smoke:
        p["epochs"] = 5
    if name == "AMP-CF":
        if "lambda" in p:  # one weight for both entropy terms, as in the paper
            p["lambda_pos"] = p["lambda_neg"] = p.pop("lambda")
        p = {"n_personas": 4, "factors": 64, "max_epochs": 3 if smoke else 50, **p}
    return BASELINES[BASELINE_NAMES[name]](**p)


def timed_fit_and_serve(model, split) -> tuple[float, float]:
    """Seconds to fit ``model`` on ``split.train``, then to give top-10 lists with their
    intervals to every test user (the costs tables' "recommend-all")."""
    t0 = time.perf_counter()
    model.fit(split.train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.recommend(split.test.ratings["user_id"].unique(), n=10)
    return fit_s, time.perf_counter() - t0


def _run_one(name: str, data_home: str | None, smoke: bool, n_boot: int, queue, tuned: dict | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    from bayes_persona.evaluation import evaluate, tune

    items, split, inner = _data(data_home)
    params: dict = {}
    table = None
    t_tune = time.perf_counter()
    if tuned is not None:  # hyperparameters tuned on validation by an earlier run
        params = dict(tuned)
    elif name in TUNING_GRIDS and not smoke:
        params, table = tune(lambda **p: _make(name, p, smoke), TUNING_GRIDS[name], inner.train, inner.test, metric="ndcg", k=10)
    tune_s = time.perf_counter() - t_tune
    if name == "AMP-CF":
        # Early stopping needs held-out rows the model does not train on: find the best
        # epoch on the inner split, then refit on the whole train split for that many.
        probe_params = {**params, "max_epochs": 3 if smoke else 50}  # the tuning grid's budget is shorter
        probe = _make(name, probe_params, smoke).fit(inner.train, validation=inner.test)
        params = {**params, "max_epochs": max(1, probe.best_epoch_)}
    model = _make(name, params, smoke)
    fit_s, rec_s = timed_fit_and_serve(model, split)
    full, per_user = evaluate(model, split.train, split.test, k=(10, 20), items=items, fit=False, model_name=name,
                              metrics=["ndcg", "recall", "hit_rate", "tdd", "coverage"], n_boot=n_boot,
                              return_per_user=True)  # fmt: skip
    per_user = per_user[(per_user.metric.isin(["ndcg", "tdd"])) & (per_user.k == 10)]
    sampled = evaluate(model, split.train, split.test, k=(10,), protocol="sampled", fit=False, model_name=name,
                       metrics=["hit_rate", "ndcg"], n_boot=n_boot)  # fmt: skip
    # Second protocol, temporal leave-last-out: refit with the same hyperparameters (tuned on
    # the random protocol's validation split, so no test data), evaluate on the latest positives.
    t_split = _temporal_data(data_home)
    t_model = _make(name, params, smoke).fit(t_split.train)
    temporal = evaluate(t_model, t_split.train, t_split.test, k=(10, 20), items=items, fit=False, model_name=name,
                        metrics=["ndcg", "recall", "hit_rate"], n_boot=n_boot).assign(protocol="temporal")  # fmt: skip
    extra = {
        "fit_seconds": fit_s,
        "recommend_all_seconds": rec_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": json.dumps(params),
        # The tuning budget: configurations fitted on the validation split, and their time.
        "tuning_configs": 0 if table is None else len(table),
        "tuning_seconds": tune_s,
    }
    if name.startswith("Ours"):
        extra["svi_steps_per_second"] = model.n_steps_ / fit_s
    tuning = []
    if table is not None:
        logger.info("%s tuning on validation:\n%s", name, table.to_string())
        tuning = tuning_records(name, table, TUNING_GRIDS[name])
    rows = pd.concat([full, sampled, temporal], ignore_index=True)
    queue.put((rows.to_dict("records"), extra, per_user.to_dict("records"), tuning))


def tuning_records(name: str, table: pd.DataFrame, grid: dict) -> list[dict]:
    """The rows of ``tuning.csv`` for one model: each configuration of ``grid`` that
    :func:`~bayes_persona.evaluation.tune` fitted (its ``table``, best first), as JSON
    ``params``, with its validation ``value`` and whether it was ``chosen``."""
    native = lambda v: v.item() if hasattr(v, "item") else v  # noqa: E731
    return [{"model": name, "params": json.dumps({k: native(r[k]) for k in grid}), "metric": r["metric"], "k": int(r["k"]),
             "value": float(r["value"]), "chosen": i == 0} for i, r in enumerate(table.to_dict("records"))]  # fmt: skip


def run(models=MODELS, data_home: str | None = None, out: str | os.PathLike = "results", smoke: bool = False, n_boot: int = 1000, tuned: str | os.PathLike | None = None) -> pd.DataFrame:
    """Run the benchmark; returns the tidy results and writes results.csv / results.md.

    ``tuned``: an earlier run's ``costs.csv``, whose ``params`` (tuned on the validation
    split) are reused instead of tuning again."""
    reuse = {} if tuned is None else pd.read_csv(tuned, index_col="model")["params"].map(json.loads).to_dict()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    rows, extras, per_user, tuning = [], {}, [], []
    for name in models:
        q = ctx.Queue()
        if tuned is not None and name not in reuse:
            raise ValueError(f"--tuned {tuned}: no tuned parameters for {name!r}")
        p = ctx.Process(target=_run_one, args=(name, data_home, smoke, n_boot, q, reuse.get(name)))
        p.start()
        result = None
        while result is None:
            try:
                result = q.get(timeout=5)
            except Exception:  # queue.Empty: is the child still working?
                if not p.is_alive():
                    raise RuntimeError(f"benchmark of {name} failed (exit code {p.exitcode}); see its log above") from None
        p.join()
        recs, extra, users, tuned_rows = result
        rows += recs
        per_user += users
        tuning += tuned_rows
        extras[name] = extra
        logger.info("%s done: fit %.1fs", name, extra["fit_seconds"])
    res = pd.DataFrame(rows)
    provenance = {
        "benchmark": "ML-100K ranking (bayes_persona.bench)", "models": list(models), "smoke": bool(smoke),
        "seeds": {"split": 0, "validation_split": 1}, "n_boot": n_boot,
        "tuning_grids": {m: TUNING_GRIDS[m] for m in models if m in TUNING_GRIDS},
        "tuned_from": None if tuned is None else str(tuned), **stamp(),
    }  # fmt: skip
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    res.to_csv(out / "results.csv", index=False)
    pd.DataFrame(extras).T.rename_axis("model").to_csv(out / "costs.csv")
    (out / "results.md").write_text(markdown_table(res, extras))
    paired_tests(pd.DataFrame(per_user), n_boot=n_boot).to_csv(out / "paired.csv", index=False)
    # Every configuration tried on the validation split (best first per model): so that a
    # reader sees how far the chosen one stands from the rest, and whether it sits at an edge.
    pd.DataFrame(tuning, columns=["model", "params", "metric", "k", "value", "chosen"]).to_csv(out / "tuning.csv", index=False)
    return res


#: Pairs of models compared user by user (the first against the second).
PAIRS = (("Ours K=8", "Ours K=1"), ("Ours K=8", "EASE"), ("Ours K=1", "EASE"))


def paired_tests(per_user: pd.DataFrame, pairs=PAIRS, n_boot: int = 1000) -> pd.DataFrame:
    """Paired tests (:func:`~bayes_persona.evaluation.paired_test`) of full-ranking NDCG@10
    and TDD@10 between the models of each pair present in ``per_user``.

    Returns
    -------
    DataFrame
        Columns ``a, b, metric, k, mean_diff, low, high, p_value, n_users`` (``a - b``; a
        two-sided sign-flip p-value over the users both models were scored on).
    """
    from bayes_persona.evaluation import paired_test

    cols = ["a", "b", "metric", "k", "mean_diff", "low", "high", "p_value", "n_users"]
    rows = []
    if per_user.empty:
        return pd.DataFrame(columns=cols)
    present = set(per_user["model"])
    for a, b in pairs:
        if a not in present or b not in present:
            continue
        for metric in ("ndcg", "tdd"):
            sel = lambda m, metric=metric: per_user[(per_user.model == m) & (per_user.metric == metric) & (per_user.k == 10)].set_index("user_id")["value"]  # noqa: E731
            r = paired_test(sel(a), sel(b), n_boot=max(n_boot, 1), seed=0)
            rows.append([a, b, metric, 10, r.mean_diff, r.low, r.high, r.p_value, r.n_users])
    return pd.DataFrame(rows, columns=cols)


def markdown_table(res: pd.DataFrame, extras: dict) -> str:
    """One row per model: the headline metrics with their 95% intervals, and costs."""
    cols = [
        ("full", "ndcg", 10, "NDCG@10"), ("full", "recall", 20, "Recall@20"), ("full", "hit_rate", 10, "HR@10"),
        ("sampled", "hit_rate", 10, "HR@10 (sampled)"), ("sampled", "ndcg", 10, "NDCG@10 (sampled)"),
        ("full", "tdd", 10, "TDD@10 (lower is better)"), ("full", "coverage", 10, "coverage@10"),
    ]  # fmt: skip
    head = ["model"] + [c[3] for c in cols] + ["fit s", "peak RSS MB", "recommend-all s", "SVI steps/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, grp in res.groupby("model", sort=False):
        cells = [name]
        for proto, metric, k, _ in cols:
            r = grp[(grp.protocol == proto) & (grp.metric == metric) & (grp.k == k)]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            ci = "" if np.isnan(r.low) else f" [{r.low:.3f}, {r.high:.3f}]"
            cells.append(f"{r.value:.3f}{ci}")
        e = extras[name]
        sps = e.get("svi_steps_per_second")
        cells += [f"{e['fit_seconds']:.1f}", f"{e['peak_rss_mb']:.0f}", f"{e['recommend_all_seconds']:.2f}", f"{sps:.1f}" if sps else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def all_jobs(out: Path, data_home: str | None, smoke: bool) -> list[list[str]]:
    """The commands ``bench all`` runs, in order."""
    flag = ["--smoke"] if smoke else []
    home = ["--data-home", str(data_home)] if data_home else []
    py = [sys.executable, "-m", "bayes_persona.bench"]
    jobs = [
        [*py, *home, "--out", str(out), *flag],
        [*py, "accounts", *home, "--out", str(out / "accounts"), "--seed", "0", *flag],
        [*py, "accounts", *home, "--out", str(out / "accounts_seed2"), "--seed", "2", *flag],
        [*py, "sbc", "--out", str(out / "sbc"), *flag],
        [*py, "nuts", "--out", str(out / "nuts"), *flag],
    ]
    paper = Path(__file__).resolve().parents[2] / "paper" / "make_paper.py"
    if paper.is_file():
        jobs.append([sys.executable, str(paper), "recovery", "--out", str(out / "recovery.json"), *flag])
    else:
        logger.warning("bench all: no paper/make_paper.py next to the package; recovery skipped")
    return jobs


def serial_jobs(out: Path, data_home: str | None, smoke: bool) -> list[list[str]]:
    """The commands ``bench all`` runs after :func:`all_jobs`, one at a time with nothing
    beside them: the costs on an idle machine, from the hyperparameters tuned by the
    ranking benchmark (:mod:`bayes_persona.bench.costs`)."""
    home = ["--data-home", str(data_home)] if data_home else []
    return [[sys.executable, "-m", "bayes_persona.bench", "costs", "--tuned", str(out / "costs.csv"),
             "--out", str(out / "costs"), *home, *(["--smoke"] if smoke else [])]]  # fmt: skip


def run_all(argv: list[str]) -> int:
    """``bench all``: every result file of the paper, from one commit.

    Runs the ranking benchmark (``OUT``), the shared-account benchmark at seed 0
    (``OUT/accounts``) and at seed 2 (``OUT/accounts_seed2``, the check on pairs nothing was
    tuned on), the simulation-based calibration (``OUT/sbc``), the NUTS comparison
    (``OUT/nuts``) and, from a repository checkout, the planted recovery
    (``paper/make_paper.py recovery``, ``OUT/recovery.json``). Each is its own
    single-threaded process with its own provenance; ``tests/test_paper.py`` checks that
    they record one commit. ``--jobs N`` runs up to N of them at once (the ranking
    benchmark's timings are then taken beside another job). Refuses to start from a
    checkout with uncommitted changes unless ``--allow-dirty``.
    """
    import subprocess

    from bayes_persona.provenance import git_commit

    ap = argparse.ArgumentParser(prog="python -m bayes_persona.bench all", description=run_all.__doc__.split("\n\n")[0])
    ap.add_argument("--data-home", default=os.environ.get("BAYES_PERSONA_DATA"))
    ap.add_argument("--out", default="paper/results")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets everywhere (for tests)")
    ap.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes")
    ap.add_argument("--jobs", type=int, default=1, help="jobs run at once (default 1)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be a positive integer; got {args.jobs}")
    commit, dirty = git_commit()
    if dirty and not args.allow_dirty:
        ap.error("the checkout has uncommitted changes; commit them first (results record one commit)")
    pending, running = list(all_jobs(Path(args.out), args.data_home, args.smoke)), []
    while pending or running:
        while pending and len(running) < args.jobs:
            cmd = pending.pop(0)
            logger.info("bench all: %s", " ".join(cmd))
            running.append((cmd, subprocess.Popen(cmd)))
        done = [(c, p) for c, p in running if p.poll() is not None]
        if not done:
            time.sleep(0.5)
            continue
        for cmd, proc in done:
            running.remove((cmd, proc))
            if proc.returncode != 0:
                for _, other in running:
                    other.terminate()
                raise subprocess.CalledProcessError(proc.returncode, cmd)
    for cmd in serial_jobs(Path(args.out), args.data_home, args.smoke):  # last, and alone
        logger.info("bench all: %s", " ".join(cmd))
        subprocess.run(cmd, check=True)
    logger.info("bench all: done at commit %s; now run: python paper/make_paper.py build", commit)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["scale"]:  # python -m bayes_persona.bench scale ...: the cost benchmark
        from bayes_persona.bench.scale import main as scale_main

        return scale_main(argv[1:])
    if argv[:1] == ["all"]:  # python -m bayes_persona.bench all ...: every result file of the paper
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return run_all(argv[1:])
    if argv[:1] == ["fuzz"]:  # python -m bayes_persona.bench fuzz ...: robustness fuzz
        from bayes_persona.bench.fuzz import main as fuzz_main

        return fuzz_main(argv[1:])
    if argv[:1] == ["nuts-planted"]:  # python -m bayes_persona.bench nuts-planted ...: SVI against NUTS, planted worlds
        from bayes_persona.bench.nuts_planted import main as nuts_planted_main

        return nuts_planted_main(argv[1:])
    if argv[:1] == ["evidence"]:  # python -m bayes_persona.bench evidence ...: how many personas the data support
        from bayes_persona.bench.evidence import main as evidence_main

        return evidence_main(argv[1:])
    if argv[:1] == ["nuts"]:  # python -m bayes_persona.bench nuts ...: SVI against NUTS
        from bayes_persona.bench.nuts import main as nuts_main

        return nuts_main(argv[1:])
    if argv[:1] == ["sbc"]:  # python -m bayes_persona.bench sbc ...: simulation-based calibration
        from bayes_persona.bench.sbc import main as sbc_main

        return sbc_main(argv[1:])
    if argv[:1] == ["costs"]:  # python -m bayes_persona.bench costs ...: timings on an idle machine
        from bayes_persona.bench.costs import main as costs_main

        return costs_main(argv[1:])
    if argv[:1] == ["accounts"]:  # python -m bayes_persona.bench accounts ...: attribution
        from bayes_persona.bench.accounts import main as accounts_main

        return accounts_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bayes_persona.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-home", default=os.environ.get("BAYES_PERSONA_DATA"), help="folder holding ml-100k/ (default $BAYES_PERSONA_DATA)")
    ap.add_argument("--out", default="results", help="output folder (default ./results)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS))
    ap.add_argument("--smoke", action="store_true", help="tiny training budgets, no tuning (seconds; for tests)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--tuned", default=None, help="an earlier run's costs.csv: reuse its tuned hyperparameters instead of tuning")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    run(models, args.data_home, args.out, args.smoke, args.n_boot, args.tuned)
    sys.stdout.write((Path(args.out) / "results.md").read_text())
    return 0

