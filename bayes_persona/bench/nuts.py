"""SVI against NUTS on small prior worlds: ``python -m bayes_persona.bench nuts``.

Runs :func:`bayes_persona.diagnostics.nuts.compare_with_nuts` and writes into ``--out``:

* ``intervals.csv``: per world, user, quantity and method the truth, the median and the
  central intervals;
* ``coverage.csv``: coverage of the 50/80/90/95% intervals per method and quantity (the
  methods: each guide, each guide with its user draws resampled given the item draws,
  ``"<guide>+resampled"``, unless ``--resample 0``; each guide fitted by the per-user
  importance-weighted bound, ``"<guide>+iw<P>"``, unless ``--particles 1``; with ``--gibbs``
  every fit scored with the draws of the Gibbs sampler that uses it as its proposal,
  ``"<method>+gibbs"``; and ``nuts``);
* ``overlap.csv``: per guide and quantity, the mean overlap (intersection over union) of
  its 90% intervals with NUTS's, and the median ratio of their widths;
* ``provenance.json``: the settings (``repeats``: whether the worlds' picks were drawn
  independently, repeats counted, the default, or distinct, ``--distinct``; folders without
  it were run with distinct picks), NUTS's divergences, wall time per method, the commit
  and the package versions.

The defaults (10 worlds of 15 users, 80 items, K = 3, D = 2) take about 20 minutes on one
core; ``--smoke`` runs one tiny world.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from bayes_persona.bench.sbc import write_results

logger = logging.getLogger(__name__)

__all__ = ["main", "DEFAULTS", "SMOKE"]

DEFAULTS = {"n_worlds": 10, "num_samples": 200, "warmup_steps": 400, "max_epochs": 1000, "resample": 50,
            "user_particles": 8}
SMOKE = {"n_worlds": 1, "n_users": 6, "n_items": 20, "interactions_per_user": (3, 6), "num_samples": 20,
         "warmup_steps": 30, "max_epochs": 30, "resample": 5, "user_particles": 2}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the NUTS comparison (module docstring)."""
    import torch

    from bayes_persona.diagnostics.nuts import compare_with_nuts

    ap = argparse.ArgumentParser(prog="python -m bayes_persona.bench nuts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="paper/results/nuts", help="output folder (default paper/results/nuts)")
    ap.add_argument("--worlds", type=int, default=None, help=f"default {DEFAULTS['n_worlds']}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resample", type=int, default=None,
                    help=f"guide draws per resampled user draw, 0 for none (default {DEFAULTS['resample']})")
    ap.add_argument("--particles", type=int, default=None,
                    help="draws of each user in the importance-weighted fits, 1 for none "
                    f"(default {DEFAULTS['user_particles']})")
    ap.add_argument("--gibbs", action="store_true",
                    help="also score every fit with the draws of the Gibbs sampler that uses it as its "
                    "proposal ('<method>+gibbs')")
    ap.add_argument("--distinct", action="store_true",
                    help="simulate distinct picks (without replacement), as runs before the exact "
                    "simulator did; the default draws picks independently and counts repeats")
    ap.add_argument("--smoke", action="store_true", help="one tiny world (for tests)")
    args = ap.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    cfg = dict(SMOKE if args.smoke else DEFAULTS)
    if args.worlds is not None:
        if args.worlds < 1:
            ap.error(f"--worlds must be a positive integer; got {args.worlds}")
        cfg["n_worlds"] = args.worlds
    if args.resample is not None:
        if args.resample < 0:
            ap.error(f"--resample must be a non-negative integer; got {args.resample}")
        cfg["resample"] = args.resample
    if args.particles is not None:
        if args.particles < 1:
            ap.error(f"--particles must be a positive integer; got {args.particles}")
        cfg["user_particles"] = args.particles
    res = compare_with_nuts(**cfg, gibbs=args.gibbs, repeats=not args.distinct, random_state=args.seed)
    write_results(
        Path(args.out), {"intervals": res.intervals, "coverage": res.coverage, "overlap": res.overlap},
        {"benchmark": "SVI against NUTS (bayes_persona.bench.nuts)", "smoke": bool(args.smoke), **res.config,
         "seconds": res.seconds},
        argv,
    )  # fmt: skip
    logger.info("%s\n%s\n(files in %s)", res.coverage.to_string(), res.overlap.to_string(), args.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
