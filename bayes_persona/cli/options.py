"""Constants, logging and option groups of the ``bayes-persona`` command line.

This module holds the file names of a fit folder, the choices of the data and model
options, :class:`UsageError` (bad input found by the CLI itself, exit code 2), the
stderr logging handler, the argparse value types and the option groups that several
commands share (general, data and model options, with the estimator's defaults written
out so that ``--help`` needs no torch). It imports only the standard library.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

PROG = "bayes-persona"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
ELBO_FILE = "elbo.csv"
TRUTH_FILE = "synthetic_truth.csv"
MOVIELENS_CHOICES = ("100k", "1m", "20m", "25m", "latest-small")
MODEL_CHOICES = ("ours", "popular", "ease", "ials", "bpr", "ampcf")  # "ours" and baselines.BASELINES

logger = logging.getLogger("bayes_persona.cli")


class UsageError(Exception):
    """Bad input detected by the CLI itself (exit code 2)."""


# --------------------------------------------------------------------------- logging
class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (works under pytest's capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


_HANDLER = _StderrHandler()
_HANDLER.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))


def configure_logging(verbose: int) -> None:
    root = logging.getLogger("bayes_persona")
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    root.setLevel(
        logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    )


# --------------------------------------------------------------------------- parser
def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer of at least ``minimum`` (``what`` names it in errors)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int_arg = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a non-negative integer")


def probability_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def int_list_arg(text: str) -> list[int]:
    return [positive_int_arg(t) for t in text.replace(",", " ").split()]


def model_list_arg(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in MODEL_CHOICES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {bad or [text]}; choose from {', '.join(MODEL_CHOICES)}"
        )
    return list(dict.fromkeys(names))


def common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the command name."""
    default = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("general options")
    g.add_argument(
        "--threads",
        type=positive_int_arg,
        default=default(1),
        metavar="N",
        help="torch CPU threads (default: 1)",
    )
    g.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show the full traceback on errors",
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="log more (-v: info, -vv: debug)",
    )
    g.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="hide progress bars"
    )
    return p


def data_options(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("data (choose one source)")
    one = src.add_mutually_exclusive_group(required=True)
    one.add_argument(
        "--movielens",
        choices=MOVIELENS_CHOICES,
        metavar="VARIANT",
        help=f"a MovieLens release: {', '.join(MOVIELENS_CHOICES)}",
    )
    one.add_argument(
        "--data",
        metavar="FILE",
        help="interactions file (.csv, .tsv, .parquet, ...) with a header row",
    )
    one.add_argument(
        "--synthetic",
        action="store_true",
        help="planted-persona data from bayes_persona.make_synthetic",
    )
    src.add_argument(
        "--data-home",
        metavar="DIR",
        help="folder holding ml-<variant>/ (default: $BAYES_PERSONA_DATA, else "
        "the user cache folder)",
    )
    src.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading MovieLens when it is absent",
    )
    src.add_argument("--user-col", default="user_id", help="--data: user column (default: user_id)")
    src.add_argument("--item-col", default="item_id", help="--data: item column (default: item_id)")
    src.add_argument("--rating-col", default=None, help="--data: rating column (default: none)")
    src.add_argument(
        "--timestamp-col", default=None, help="--data: timestamp column (default: none)"
    )
    src.add_argument(
        "--sep",
        default=None,
        help="--data: column separator (default: from the extension, else sniffed)",
    )
    src.add_argument(
        "--aggregate-duplicates",
        action="store_true",
        help="--data: merge repeated (user, item) rows instead of failing",
    )
    src.add_argument(
        "--items",
        metavar="FILE",
        dest="items_file",
        help="--data: item metadata file (same item column)",
    )
    src.add_argument(
        "--categories-col", default=None, help="--items: column of '|'-separated categories"
    )
    src.add_argument("--title-col", default=None, help="--items: title column")
    syn = p.add_argument_group("synthetic data (--synthetic)")
    syn.add_argument("--n-users", type=positive_int_arg, default=500, help="users (default: 500)")
    syn.add_argument("--n-items", type=positive_int_arg, default=800, help="items (default: 800)")
    syn.add_argument("--n-tastes", type=positive_int_arg, default=6, help="tastes (default: 6)")
    syn.add_argument("--data-seed", type=int, default=0, help="generator seed (default: 0)")
    pre = p.add_argument_group("preprocessing")
    pre.add_argument(
        "--binarize",
        type=float,
        metavar="THRESHOLD",
        default=None,
        help="keep interactions rated >= THRESHOLD as implicit positives",
    )


# PersonaRecommender's defaults, written out so that --help shows them without importing
# torch (tests/cli/test_cli.py checks them against the estimator's signature).
MODEL_DEFAULTS = {
    "n_personas": 8, "n_factors": 16, "max_epochs": 150, "batch_size": 512, "feedback": "implicit",
    "guide": "meanfield", "n_prototypes": 8, "user_particles": 1, "random_state": 0,
}  # fmt: skip


def model_options(p: argparse.ArgumentParser) -> None:
    d = MODEL_DEFAULTS
    g = p.add_argument_group("model (defaults: PersonaRecommender's)")
    g.add_argument("--personas", type=positive_int_arg, help=f"personas per user (default: {d['n_personas']})")
    g.add_argument("--factors", type=positive_int_arg, help=f"latent dimension (default: {d['n_factors']})")
    g.add_argument("--epochs", type=positive_int_arg, help=f"maximum SVI epochs (default: {d['max_epochs']})")
    g.add_argument("--batch-size", type=positive_int_arg, help=f"users per SVI step (default: {d['batch_size']})")
    g.add_argument("--feedback", choices=("implicit", "explicit"), help=f"likelihood (default: {d['feedback']})")
    g.add_argument("--guide", choices=("meanfield", "lowrank"), help=f"variational family (default: {d['guide']})")
    g.add_argument(
        "--prototypes", type=_non_negative_int,
        help=f"taste prototypes of the persona prior (0: isotropic Normal prior; default: {d['n_prototypes']})",
    )  # fmt: skip
    g.add_argument(
        "--user-particles", type=positive_int_arg,
        help="draws of each user per SVI step; above 1 the fit maximises the per-user "
        f"importance-weighted bound instead of the ELBO (default: {d['user_particles']})",
    )  # fmt: skip
    g.add_argument("--seed", type=int, help=f"random_state (default: {d['random_state']})")


def fmt_help(desc: str) -> dict[str, Any]:
    return {"description": desc, "formatter_class": argparse.RawDescriptionHelpFormatter}


def version_string() -> str:
    try:
        from bayes_persona._version import __version__
    except Exception:  # pragma: no cover
        return "unknown"
    return __version__
