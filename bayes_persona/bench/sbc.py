"""Simulation-based calibration benchmark: ``python -m bayes_persona.bench sbc``.

Runs :func:`bayes_persona.diagnostics.sbc.compare_guides` (worlds drawn from the model's
own prior, the joint likelihood, the prior scales fixed at their simulated values, the same
worlds for every guide) and writes into ``--out``:

* ``ranks.csv`` (gzipped, ``ranks.csv.gz``, above :data:`GZIP_ABOVE` bytes): one row per
  ranked quantity (guide, replication, quantity, user, ...);
* ``coverage.csv``: coverage of the central 50/80/90/95% intervals per guide and quantity;
* ``uniformity.csv``: the chi-square test of rank uniformity per guide and quantity;
* ``provenance.json``: the settings (``fit_kwargs`` holds ``user_particles`` when
  ``--particles`` is above 1; ``resample`` the candidates of each resampled user draw,
  ``--resample``; ``gibbs`` whether the draws came from the guide-proposal Gibbs sampler,
  ``--gibbs``, and ``gibbs_options`` its settings, ``--gibbs-burn``, ``--gibbs-thin``,
  ``--gibbs-proposal-scale``; ``repeats`` whether picks were drawn independently, repeats counted as
  ``sample_weight``, so that the simulator is exactly the likelihood, the default, or
  distinct, ``--distinct``), the mean share of picks that repeat an earlier one (with
  ``--distinct``, the simulator's mismatch with the likelihood), the wall time, the commit
  and the package versions.

The defaults (100 replications of 40 users, 500 items, K = 3, D = 3) take about ten
minutes per guide on 2 cores; ``--smoke`` runs two tiny replications.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bayes_persona.provenance import stamp

logger = logging.getLogger(__name__)

__all__ = ["main", "DEFAULTS", "SMOKE"]

#: World and fit settings of the benchmark.
DEFAULTS = {
    "n_replications": 100,
    "n_users": 40,
    "n_items": 500,
    "n_personas": 3,
    "n_factors": 3,
    "interactions_per_user": (10, 20),
    "num_samples": 99,
    "persona_scale": 0.7,
    "item_scale": 0.7,
    "max_epochs": 300,
    "learning_rate": 0.05,
}

#: Tiny budgets for tests and CI.
SMOKE = {**DEFAULTS, "n_replications": 2, "n_users": 12, "n_items": 60, "interactions_per_user": (4, 8),
         "num_samples": 19, "max_epochs": 10}  # fmt: skip


#: A result table whose CSV is larger than this is stored gzipped (``<name>.csv.gz``).
GZIP_ABOVE = 1_000_000


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            data = text.encode()
            # mtime 0: the same table gives the same bytes
            fh.write(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a plain file, not mkstemp's owner-only mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(out: Path, frames: dict[str, pd.DataFrame], provenance: dict, argv: Sequence[str] | None) -> None:
    """Each frame as ``out/<name>.csv`` and ``provenance`` (with the arguments, the commit,
    the machine and the package versions) as ``out/provenance.json``, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    prov = {
        "arguments": sys.argv[1:] if argv is None else list(argv),
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in provenance.items()},
        **stamp(),
    }
    for name, frame in frames.items():  # six significant digits: far below any figure's precision
        text = frame.to_csv(index=False, float_format="%.6g")
        big = len(text) > GZIP_ABOVE
        (out / f"{name}.csv{'' if big else '.gz'}").unlink(missing_ok=True)  # no stale twin
        _write_atomic(out / f"{name}.csv{'.gz' if big else ''}", text)
    _write_atomic(out / "provenance.json", json.dumps(prov, indent=2, default=str) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the SBC benchmark (module docstring)."""
    import torch

    from bayes_persona.diagnostics.sbc import compare_guides

    ap = argparse.ArgumentParser(prog="python -m bayes_persona.bench sbc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="paper/results/sbc", help="output folder (default paper/results/sbc)")
    ap.add_argument("--replications", type=int, default=None, help=f"default {DEFAULTS['n_replications']}")
    ap.add_argument("--guides", default="meanfield,lowrank", help="comma-separated guides")
    ap.add_argument("--likelihood", default="joint", choices=("joint", "mixture"))
    ap.add_argument("--empirical-bayes", action="store_true", help="fit the prior scales instead of fixing them")
    ap.add_argument("--particles", type=int, default=1,
                    help="draws of each user per SVI step; above 1 the fits maximise the per-user "
                    "importance-weighted bound (default 1: the ELBO)")
    ap.add_argument("--resample", type=int, default=0,
                    help="rank among draws whose user part is resampled from this many guide draws "
                    "given each item draw (default 0: the guide's own draws)")
    ap.add_argument("--gibbs", action="store_true",
                    help="rank among draws of the Gibbs sampler with the fitted guide as its proposal "
                    "(bayes_persona.diagnostics.refine)")
    ap.add_argument("--gibbs-burn", type=int, default=None, help="sweeps before the first kept draw (--gibbs; default 30)")
    ap.add_argument("--gibbs-thin", type=int, default=None, help="sweeps between kept draws (--gibbs; default 2)")
    ap.add_argument("--gibbs-proposal-scale", type=float, default=None,
                    help="widen the sampler's proposals around the guide's means by this factor (--gibbs; default 1)")
    ap.add_argument("--distinct", action="store_true",
                    help="simulate distinct picks (without replacement), as runs before the exact "
                    "simulator did; the default draws picks independently and counts repeats")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="two tiny replications (for tests)")
    args = ap.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    cfg = dict(SMOKE if args.smoke else DEFAULTS)
    if args.replications is not None:
        if args.replications < 1:
            ap.error(f"--replications must be a positive integer; got {args.replications}")
        cfg["n_replications"] = args.replications
    if args.particles < 1:
        ap.error(f"--particles must be a positive integer; got {args.particles}")
    if args.resample < 0:
        ap.error(f"--resample must be a non-negative integer; got {args.resample}")
    if args.gibbs and args.resample:
        ap.error("--gibbs and --resample are two ways to draw; give one")
    go = {k: v for k, v in (("burn", args.gibbs_burn), ("thin", args.gibbs_thin),
                            ("proposal_scale", args.gibbs_proposal_scale)) if v is not None}  # fmt: skip
    if go and not args.gibbs:
        ap.error("--gibbs-burn, --gibbs-thin and --gibbs-proposal-scale need --gibbs")
    if go.get("burn", 0) < 0 or go.get("thin", 1) < 1 or go.get("proposal_scale", 1.0) <= 0:
        ap.error(f"--gibbs-burn must be >= 0, --gibbs-thin >= 1 and --gibbs-proposal-scale > 0; got {go}")
    guides = tuple(g.strip() for g in args.guides.split(",") if g.strip())
    fit = {"max_epochs": cfg.pop("max_epochs"), "learning_rate": cfg.pop("learning_rate")}
    if args.particles > 1:
        fit["user_particles"] = args.particles
    res = compare_guides(
        guides, **cfg, likelihood=args.likelihood, empirical_bayes=args.empirical_bayes,
        fit_kwargs=fit, resample=args.resample, gibbs=args.gibbs, gibbs_options=go, repeats=not args.distinct,
        random_state=args.seed,
    )  # fmt: skip
    write_results(
        Path(args.out), {"ranks": res.ranks, "coverage": res.coverage, "uniformity": res.uniformity},
        {"benchmark": "simulation-based calibration (bayes_persona.bench.sbc)", "smoke": bool(args.smoke),
         **res.config, "seconds": res.seconds},
        argv,
    )  # fmt: skip
    logger.info("%s\n(%.0f s; files in %s)", res.summary(), res.seconds, args.out)
    return 0


def read(folder: str | os.PathLike) -> dict[str, pd.DataFrame | dict]:
    """The files of one run: ``{"ranks", "coverage", "uniformity": DataFrame, "provenance": dict}``."""
    folder = Path(folder)
    out: dict[str, pd.DataFrame | dict] = {}
    for name in ("ranks", "coverage", "uniformity"):
        path = folder / f"{name}.csv"
        out[name] = pd.read_csv(path if path.is_file() else path.with_suffix(".csv.gz"))
    out["provenance"] = json.loads((folder / "provenance.json").read_text())
    return out


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
