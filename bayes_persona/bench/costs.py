"""Costs on an idle machine: ``python -m bayes_persona.bench costs``.

The ranking benchmark times each model beside another job (``bench all --jobs 2``) and on
one thread. This job runs alone, after the others, and times each model with every core it
is given (``--threads``, default 2): the fit on the ML-100K train split with the
hyperparameters the ranking benchmark tuned on validation (read from its ``costs.csv``),
then top-10 lists with their 90% intervals for every test user ("recommend-all"), each
model in a fresh process so that its peak memory (max RSS) is its own. Writes
``costs.csv`` (one row per model, with its ratio to iALS in the same run) and
``provenance.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import resource
from pathlib import Path

import pandas as pd

from bayes_persona.provenance import stamp

logger = logging.getLogger(__name__)

COST_MODELS = ("EASE", "iALS", "Ours K=1", "Ours K=8")


def _time_one(name: str, params: dict, data_home: str | None, threads: int, smoke: bool, queue) -> None:
    import torch

    from bayes_persona.bench import _data, _make, timed_fit_and_serve

    torch.set_num_threads(threads)
    items, split, _ = _data(data_home)
    if name.startswith("Ours"):
        params = {**params, "n_threads": threads}
    fit_s, rec_s = timed_fit_and_serve(_make(name, params, smoke), split)
    queue.put({
        "model": name, "threads": threads, "fit_seconds": fit_s, "recommend_all_seconds": rec_s,
        "users": split.test.ratings["user_id"].nunique(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": json.dumps(params),
    })  # fmt: skip


def run(tuned: str | os.PathLike, out: str | os.PathLike, data_home: str | None = None, threads: int = 2, smoke: bool = False) -> pd.DataFrame:
    """Time every model of :data:`COST_MODELS` alone; returns and writes ``costs.csv``.

    ``tuned`` is the ranking benchmark's ``costs.csv``, whose ``params`` column holds the
    hyperparameters each model was tuned to on the validation split.
    """
    params = pd.read_csv(tuned, index_col="model")["params"].map(json.loads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    rows = []
    for name in COST_MODELS:
        p = params.get(name, {})  # (with --smoke, _make's tiny budget overrides the tuned one)
        q = ctx.Queue()
        proc = ctx.Process(target=_time_one, args=(name, p, data_home, threads, smoke, q))
        proc.start()
        while True:
            try:
                rows.append(q.get(timeout=5))
                break
            except Exception:  # queue.Empty: is the child still working?
                if not proc.is_alive():
                    raise RuntimeError(f"costs of {name} failed (exit code {proc.exitcode}); see its log above") from None
        proc.join()
        logger.info("costs: %s fit %.1fs, recommend-all %.2fs", name, rows[-1]["fit_seconds"], rows[-1]["recommend_all_seconds"])
    res = pd.DataFrame(rows).set_index("model")
    for col in ("fit_seconds", "recommend_all_seconds", "peak_rss_mb"):
        res[col.replace("_seconds", "").replace("_mb", "") + "_vs_iALS"] = res[col] / res.loc["iALS", col]
    res.to_csv(out / "costs.csv")
    prov = {"benchmark": "ML-100K costs on an idle machine (bayes_persona.bench.costs)", "threads": threads,
            "tuned_from": str(tuned), "smoke": bool(smoke), "models": list(COST_MODELS), **stamp()}  # fmt: skip
    (out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bayes_persona.bench costs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tuned", default="paper/results/costs.csv", help="the ranking benchmark's costs.csv (tuned hyperparameters)")
    ap.add_argument("--out", default="paper/results/costs")
    ap.add_argument("--data-home", default=os.environ.get("BAYES_PERSONA_DATA"))
    ap.add_argument("--threads", type=int, default=2, help="torch threads per model (default 2)")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets (for tests)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads must be a positive integer; got {args.threads}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = run(args.tuned, args.out, args.data_home, args.threads, args.smoke)
    print(res.round(3).to_string())  # noqa: T201  (a command's report)
    return 0
