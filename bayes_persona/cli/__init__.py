"""Command-line interface: ``bayes-persona <command> [options]``.

Commands
--------
demo       fit on planted-persona data and compare the fitted personas with the truth
fit        fit a model on MovieLens, a CSV/TSV/Parquet file or synthetic data; save it
recommend  top-n items of a user, each with its explaining persona and interval
explain    which persona explains given items for a user, with intervals
personas   a user's personas: prevalence, interval, top items and categories
evaluate   fit models on a train/test split and print the tidy metrics table
report     one self-contained HTML file of diagnostics plots for a saved model

Exit codes: 0 success, 1 runtime error, 2 usage error or bad input (bad option, invalid
data, unknown id, missing dataset or model file). Errors go to stderr as one line
``bayes-persona: error: <message>``; ``--debug`` adds the traceback.

``python -m bayes_persona`` and ``python -m bayes_persona.cli`` run the same program. Heavy
imports (torch, pyro) happen inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "write_report"]

PROG = "bayes-persona"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
ELBO_FILE = "elbo.csv"
TRUTH_FILE = "synthetic_truth.csv"
MOVIELENS_CHOICES = ("100k", "1m", "20m", "25m", "latest-small")
MODEL_CHOICES = ("ours", "popular", "ease", "ials", "bpr", "ampcf")

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


def _configure_logging(verbose: int) -> None:
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


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a non-negative integer")


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _int_list(text: str) -> list[int]:
    return [_positive_int(t) for t in text.replace(",", " ").split()]


def _model_list(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in MODEL_CHOICES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {bad or [text]}; choose from {', '.join(MODEL_CHOICES)}"
        )
    return list(dict.fromkeys(names))


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the command name."""
    default = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("general options")
    g.add_argument(
        "--threads",
        type=_positive_int,
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


def _data_options(p: argparse.ArgumentParser) -> None:
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
    syn.add_argument("--n-users", type=_positive_int, default=500, help="users (default: 500)")
    syn.add_argument("--n-items", type=_positive_int, default=800, help="items (default: 800)")
    syn.add_argument("--n-tastes", type=_positive_int, default=6, help="tastes (default: 6)")
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
# torch (tests/test_cli.py checks them against the estimator's signature).
MODEL_DEFAULTS = {
    "n_personas": 4, "n_factors": 16, "max_epochs": 300, "batch_size": 64, "feedback": "implicit",
    "guide": "meanfield", "n_prototypes": 8, "random_state": 0,
}  # fmt: skip


def _model_options(p: argparse.ArgumentParser) -> None:
    d = MODEL_DEFAULTS
    g = p.add_argument_group("model (defaults: PersonaRecommender's)")
    g.add_argument("--personas", type=_positive_int, help=f"personas per user (default: {d['n_personas']})")
    g.add_argument("--factors", type=_positive_int, help=f"latent dimension (default: {d['n_factors']})")
    g.add_argument("--epochs", type=_positive_int, help=f"maximum SVI epochs (default: {d['max_epochs']})")
    g.add_argument("--batch-size", type=_positive_int, help=f"users per SVI step (default: {d['batch_size']})")
    g.add_argument("--feedback", choices=("implicit", "explicit"), help=f"likelihood (default: {d['feedback']})")
    g.add_argument("--guide", choices=("meanfield", "lowrank"), help=f"variational family (default: {d['guide']})")
    g.add_argument(
        "--prototypes", type=_non_negative_int,
        help=f"taste prototypes of the persona prior (0: isotropic Normal prior; default: {d['n_prototypes']})",
    )  # fmt: skip
    g.add_argument("--seed", type=int, help=f"random_state (default: {d['random_state']})")


def _fmt_help(desc: str) -> dict[str, Any]:
    return {"description": desc, "formatter_class": argparse.RawDescriptionHelpFormatter}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``bayes-persona``."""
    top = argparse.ArgumentParser(
        prog=PROG,
        parents=[_common_options(suppress=False)],
        description="Explainable recommendation with a Bayesian attentive multi-persona model.",
        epilog="Run 'bayes-persona COMMAND --help' for a command's options. Exit codes: 0 ok, "
        "1 runtime error, 2 usage error or bad input.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_common_options(suppress=True)]

    def add(name: str, help_: str, desc: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, parents=common, **_fmt_help(desc))

    p = add(
        "demo",
        "fit on planted-persona data and compare with the truth",
        "Fit the model on synthetic users with planted tastes, then show a few users'\n"
        "fitted personas beside their planted tastes, their top recommendations with the\n"
        "explaining persona and its interval, and the persona-recovery figures.",
    )
    p.add_argument("--smoke", action="store_true", help="a tiny version that runs in seconds")
    p.add_argument("--n-users", type=_positive_int, default=None, help="users (default: 500)")
    p.add_argument("--n-items", type=_positive_int, default=None, help="items (default: 800)")
    p.add_argument("--n-tastes", type=_positive_int, default=None, help="tastes (default: 6)")
    p.add_argument("--seed", type=int, default=0, help="data and model seed (default: 0)")
    p.add_argument(
        "--show",
        type=_positive_int,
        default=None,
        metavar="N",
        help="users to show (default: 3; 1 with --smoke)",
    )
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="maximum SVI epochs (default: the demo's setting)",
    )
    p.set_defaults(func=cmd_demo)

    p = add(
        "fit",
        "fit a model and save it to a folder",
        "Fit a PersonaRecommender and write OUT/model.pt (the saved model),\n"
        "OUT/config.json (settings, data and fit summary) and OUT/elbo.csv (ELBO per step).\n"
        "The files are written to a temporary folder first and moved into OUT at the end; \n"
        "config.json records the sha256 of model.pt, and commands that load OUT check it.\n"
        "With --checkpoint-dir the fit saves its state there every --checkpoint-every steps;\n"
        "after an interruption, rerun the same command with --resume to continue from it.\n\n"
        "examples:\n"
        "  bayes-persona fit --synthetic --epochs 30 --out runs/synthetic\n"
        "  bayes-persona fit --movielens 100k --binarize 4 --out runs/ml100k --checkpoint-dir runs/ckpt --resume\n"
        "  bayes-persona fit --movielens 100k --binarize 4 --out runs/ml100k\n"
        "  bayes-persona fit --data ratings.csv --user-col user --item-col movie --out runs/mine",
    )
    _data_options(p)
    _model_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    ck = p.add_argument_group("checkpoints")
    ck.add_argument("--checkpoint-dir", metavar="DIR", default=None, help="save resumable fit state here")
    ck.add_argument(
        "--checkpoint-every", type=_positive_int, default=100, metavar="STEPS",
        help="steps between checkpoints (default: 100)",
    )  # fmt: skip
    ck.add_argument(
        "--resume", action="store_true",
        help="continue from the checkpoint in --checkpoint-dir when there is one",
    )  # fmt: skip
    p.set_defaults(func=cmd_fit)

    def model_user(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model",
            required=True,
            metavar="DIR",
            help="folder written by 'fit' (or the model.pt file itself)",
        )
        p.add_argument("--user", required=True, metavar="ID", help="user id")

    def output(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--format",
            choices=("table", "csv", "json"),
            default="table",
            help="output format (default: table)",
        )
        p.add_argument(
            "--hdi-prob",
            type=_probability,
            default=None,
            metavar="P",
            help="mass of the credible intervals (default: the model's)",
        )

    p = add(
        "recommend",
        "top-n items of a user with explaining personas",
        "Top-n unseen items of a user; each comes with the persona that explains it, the\n"
        "posterior median of P(persona | user, item) and its highest-density interval.",
    )
    model_user(p)
    p.add_argument("--n", type=_positive_int, default=10, help="items (default: 10)")
    p.add_argument("--include-seen", action="store_true", help="do not exclude training items")
    output(p)
    p.set_defaults(func=cmd_recommend)

    p = add(
        "explain",
        "which persona explains given items for a user",
        "For each item, every persona's probability of explaining it for the user\n"
        "(posterior median and interval) and the persona's prevalence.",
    )
    model_user(p)
    p.add_argument(
        "--item",
        required=True,
        action="extend",
        nargs="+",
        metavar="ID",
        help="item id(s); repeat or list several",
    )
    output(p)
    p.set_defaults(func=cmd_explain)

    p = add(
        "personas",
        "describe a user's personas",
        "A user's personas (0 = most prevalent): prevalence mean and interval, share of\n"
        "the user's training interactions, top unseen items and top categories.",
    )
    model_user(p)
    p.add_argument(
        "--n-items", type=_positive_int, default=5, help="top items per persona (default: 5)"
    )
    output(p)
    p.set_defaults(func=cmd_personas)

    p = add(
        "evaluate",
        "fit models on a split and print the metrics table",
        "Split the data at random (per-interaction holdout), fit each model on the\n"
        "training part and measure it on the test part; prints the tidy table\n"
        "model, protocol, metric, k, value, low, high (bootstrap interval).\n\n"
        "example:\n"
        "  bayes-persona evaluate --movielens 100k --binarize 4 --models ours,popular,ease",
    )
    _data_options(p)
    _model_options(p)
    p.add_argument(
        "--models",
        type=_model_list,
        default=["ours", "popular", "ease"],
        help=f"comma-separated, from {','.join(MODEL_CHOICES)} (default: ours,popular,ease)",
    )
    p.add_argument(
        "--k",
        type=_int_list,
        default=[10, 20],
        metavar="K[,K...]",
        help="cut-offs (default: 10,20)",
    )
    p.add_argument(
        "--protocol",
        choices=("full", "sampled"),
        default="full",
        help="full ranking or the sampled (99 negatives) protocol (default: full)",
    )
    p.add_argument(
        "--test-fraction",
        type=_probability,
        default=0.2,
        help="share of interactions held out (default: 0.2)",
    )
    p.add_argument("--split-seed", type=int, default=0, help="split seed (default: 0)")
    p.add_argument(
        "--n-boot",
        type=_positive_int,
        default=None,
        help="bootstrap resamples (default: evaluate's)",
    )
    p.add_argument("--out", metavar="CSV", help="also write the table to this CSV file")
    p.set_defaults(func=cmd_evaluate)

    p = add(
        "report",
        "write an HTML diagnostics report for a saved model",
        "One self-contained HTML file (plots embedded as PNG) with the ELBO trace and,\n"
        "where bayes_persona.plotting provides them, a few users' persona maps and\n"
        "explanation forests; plots that are unavailable are omitted and logged.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="folder written by 'fit'")
    p.add_argument("--out", required=True, metavar="FILE", help="HTML file to write")
    p.add_argument(
        "--user",
        action="extend",
        nargs="+",
        metavar="ID",
        dest="users",
        help="users to show (default: the first --n-users users)",
    )
    p.add_argument("--n-users", type=_positive_int, default=3, help="users to show (default: 3)")
    p.add_argument(
        "--n-items",
        type=_positive_int,
        default=5,
        help="recommended items per explanation forest (default: 5)",
    )
    p.set_defaults(func=cmd_report)
    return top


def _version() -> str:
    try:
        from bayes_persona._version import __version__
    except Exception:  # pragma: no cover
        return "unknown"
    return __version__


# --------------------------------------------------------------------------- helpers
def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet


def _load_data(args: argparse.Namespace):
    """The Dataset chosen by the data options, a description for config.json, and the
    synthetic truth (None for real data)."""
    import bayes_persona as bp

    truth = None
    if args.movielens:
        data = bp.load_movielens(
            args.movielens, data_home=args.data_home, download=not args.no_download
        )
        desc: dict[str, Any] = {"source": "movielens", "variant": args.movielens}
    elif args.data:
        path = Path(args.data)
        if not path.exists():
            raise UsageError(f"--data: no such file: {path}")
        ratings = bp.load_interactions(
            path,
            user_col=args.user_col,
            item_col=args.item_col,
            rating_col=args.rating_col,
            timestamp_col=args.timestamp_col,
            sep=args.sep,
            duplicates="aggregate" if args.aggregate_duplicates else "raise",
        )
        items = None
        if args.items_file:
            items = bp.load_items(
                args.items_file,
                item_col=args.item_col,
                title_col=args.title_col,
                categories_col=args.categories_col,
                sep=args.sep,
            )
        data = bp.Dataset(ratings, items, name=path.name)
        desc = {"source": "file", "path": str(path.resolve()), "items": args.items_file}
    else:
        data, truth = bp.make_synthetic(
            n_users=args.n_users, n_items=args.n_items, n_tastes=args.n_tastes, seed=args.data_seed
        )
        desc = {
            "source": "synthetic",
            "n_users": args.n_users,
            "n_items": args.n_items,
            "n_tastes": args.n_tastes,
            "seed": args.data_seed,
        }
    if args.binarize is not None:
        data = bp.binarize(data, args.binarize)
        desc["binarize"] = args.binarize
    desc.update(
        n_users=int(data.n_users),
        n_items=int(data.n_items),
        n_interactions=int(data.n_interactions),
    )
    logger.info("data: %s", desc)
    return data, desc, truth


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = {
        "personas": "n_personas",
        "factors": "n_factors",
        "epochs": "max_epochs",
        "batch_size": "batch_size",
        "feedback": "feedback",
        "guide": "guide",
        "prototypes": "n_prototypes",
        "seed": "random_state",
    }
    return {v: getattr(args, k) for k, v in names.items() if getattr(args, k) is not None}


def _model_path(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        raise UsageError(
            f"--model: no saved model at {p} (run 'bayes-persona fit --out DIR' first)"
        )
    return p


def _load_model(path: str):
    import bayes_persona as bp

    model_path = _model_path(path)
    config_path = model_path.parent / CONFIG_FILE
    if config_path.exists():  # a fit folder: its config.json must describe this model.pt
        try:
            recorded = json.loads(config_path.read_text()).get("model_sha256")
        except (ValueError, AttributeError) as exc:
            raise UsageError(f"--model: {config_path} is not valid JSON ({exc}); refit the folder") from None
        if recorded is not None and recorded != _sha256_file(model_path):
            raise UsageError(
                f"--model: {config_path} does not describe {model_path} (its model_sha256 "
                "differs): the folder was edited, or a fit was interrupted while moving its "
                "files into place; refit it"
            )
    return bp.PersonaRecommender.load(model_path)


def parse_id(text: str, vocab: Any, what: str = "user") -> Any:
    """A command-line id as the model's id kind: int when its vocabulary is int-kind."""
    if vocab.kind == "int":
        # ASCII digits only: Python's int() would also take '1_0' (10) and other scripts'
        # digits, and answer for another user than the one typed.
        if not re.fullmatch(r"-?[0-9]+", text):
            raise UsageError(
                f"{what} id {text!r} is not an integer (ASCII digits, optionally a leading '-'); "
                f"this model's {what} ids are integers"
            )
        return int(text)
    return str(text)


def _interval(low: float, high: float) -> str:
    return f"[{low:.2f}, {high:.2f}]"


def _intervals(low: Any, high: Any) -> list[str]:
    return [_interval(lo, hi) for lo, hi in zip(low, high, strict=True)]


def _f2(values: Any) -> list[str]:
    return [f"{v:.2f}" for v in values]


def recommendations_display(recs: Any, hdi_prob: float):
    """``recommend``'s frame, formatted for reading: the interval as ``[low, high]``."""
    table = recs[["rank", "item_id"] + (["title"] if "title" in recs else [])].copy()
    table["score"] = [f"{s:.4g}" for s in recs["score"]]
    table["persona"] = recs["persona"]
    table["P(persona | user, item)"] = _f2(recs["persona_prob"])
    table[f"{hdi_prob:.0%} interval"] = _intervals(
        recs["persona_prob_low"], recs["persona_prob_high"]
    )
    return table


def explanation_display(frame: Any, hdi_prob: float):
    """``explain``'s frame, formatted for reading."""
    table = frame[["item_id"] + (["title"] if "title" in frame else []) + ["persona"]].copy()
    table["prevalence"] = _f2(frame["prevalence"])
    table["P(persona | user, item)"] = _f2(frame["persona_prob"])
    table[f"{hdi_prob:.0%} interval"] = _intervals(frame["persona_prob_low"], frame["persona_prob_high"])
    return table


def personas_display(frame: Any, hdi_prob: float):
    """``personas``' frame, formatted for reading."""
    table = frame[["persona"]].copy()
    table["prevalence"] = [
        f"{v:.2f}" if active else f"{v:.2f} (unused)"
        for v, active in zip(frame["prevalence"], frame["active"], strict=True)
    ]
    table[f"{hdi_prob:.0%} interval"] = _intervals(
        frame["prevalence_low"], frame["prevalence_high"]
    )
    table["share"] = _f2(frame["share"])
    table["top categories"] = [", ".join(c) or "-" for c in frame["top_categories"]]
    top = frame["top_titles"] if "top_titles" in frame else frame["top_items"]
    table["top items"] = ["; ".join(map(str, c)) for c in top]
    return table


def _emit(frame: Any, fmt: str, table: Any, title: str) -> None:
    """Print ``frame`` as csv/json, or ``table`` (its display form) under ``title``."""
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=2) + "\n")
    else:
        sys.stdout.write(f"{title}\n{table.to_string(index=False)}\n")


# --------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    from bayes_persona.demo import SMOKE, run_demo

    kw: dict[str, Any] = dict(SMOKE) if args.smoke else {}
    for name in ("n_users", "n_items", "n_tastes", "epochs"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.show is not None:
        kw["n_show"] = args.show
    run_demo(seed=args.seed, progress=_progress(args), **kw)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import bayes_persona as bp

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    if args.resume and args.checkpoint_dir is None:
        raise UsageError("--resume needs --checkpoint-dir (where the checkpoint lies)")
    data, desc, truth = _load_data(args)
    model = bp.PersonaRecommender(**_model_kwargs(args), progress=_progress(args), n_threads=args.threads)
    start = time.perf_counter()
    model.fit(
        data, checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every, resume=args.resume
    )
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed earlier run
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it private; OUT gets a plain folder's mode
    try:
        written = _write_fit_folder(stage, model, data, desc, truth, seconds, args)
        _move_into_place(stage, out, written)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(
        f"fitted {desc['n_users']} users x {desc['n_items']} items ({desc['n_interactions']} "
        f"interactions) in {seconds:.1f} s, {model.n_steps_} steps; wrote "
        + ", ".join(str(out / w) for w in written)
    )
    return 0


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_fit_folder(stage: Path, model: Any, data: Any, desc: dict, truth: Any, seconds: float, args) -> list[str]:
    """Write fit's files into ``stage``; returns their names (model.pt last to move)."""
    import numpy as np
    import pandas as pd

    import bayes_persona as bp

    model.save(stage / MODEL_FILE)
    params = model.get_params()
    params.pop("progress", None)
    config = {
        "library_version": bp.__version__,
        "model": params,
        "model_sha256": _sha256_file(stage / MODEL_FILE),
        "data": desc,
        "fit": {
            "n_steps": int(model.n_steps_),
            "stopped_early": bool(model.stopped_early_),
            "converged": bool(model.converged_),
            "seconds": round(seconds, 2),
            "threads": args.threads,
            "resumed_from": str(args.checkpoint_dir) if args.resume else None,
        },
    }
    (stage / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
    elbo = np.asarray(model.elbo_, dtype=float)
    pd.DataFrame({"step": np.arange(1, len(elbo) + 1), "elbo": elbo}).to_csv(
        stage / ELBO_FILE, index=False
    )
    written = [CONFIG_FILE, ELBO_FILE]
    if truth is not None:
        truth.user_tastes.to_csv(stage / TRUTH_FILE, index=False)
        written.append(TRUTH_FILE)
    return written + [MODEL_FILE]


def _move_into_place(stage: Path, out: Path, names: list[str]) -> None:
    """A new ``out`` is the staged folder renamed (one atomic step). Into an existing
    ``out`` each file is renamed over its old version, model.pt last; a kill in between
    leaves a config.json whose ``model_sha256`` does not match model.pt, which
    :func:`_load_model` refuses (never a silently mixed folder)."""
    if not out.exists():
        os.replace(stage, out)
        return
    old_config = out / CONFIG_FILE
    if old_config.exists():  # invalidate first: the old config no longer describes anything
        old_config.unlink()
    for name in names:
        os.replace(stage / name, out / name)
    dir_fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def cmd_recommend(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    if args.hdi_prob is not None:
        model.set_params(hdi_prob=args.hdi_prob)
    user = parse_id(args.user, model.user_vocab_, "user")
    recs = model.recommend([user], n=args.n, exclude_seen=not args.include_seen)
    title = f"top {len(recs)} items for user {user} (persona 0 = the user's most prevalent):"
    _emit(recs, args.format, recommendations_display(recs, model.hdi_prob), title)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    user = parse_id(args.user, model.user_vocab_, "user")
    items = [parse_id(i, model.item_vocab_, "item") for i in args.item]
    hdi_prob = args.hdi_prob if args.hdi_prob is not None else model.hdi_prob
    frame = model.explain(user, items, hdi_prob=hdi_prob)
    title = f"which persona explains each item for user {user}:"
    _emit(frame, args.format, explanation_display(frame, hdi_prob), title)
    return 0


def cmd_personas(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    user = parse_id(args.user, model.user_vocab_, "user")
    hdi_prob = args.hdi_prob if args.hdi_prob is not None else model.hdi_prob
    frame = model.personas(user, n_items=args.n_items, hdi_prob=hdi_prob)
    title = f"personas of user {user} (0 = most prevalent):"
    _emit(frame, args.format, personas_display(frame, hdi_prob), title)
    return 0


def _make_baseline(name: str, args: argparse.Namespace):
    from bayes_persona import baselines as B

    seed = args.seed if args.seed is not None else 0
    if name == "popular":
        return B.MostPopular()
    if name == "ease":
        return B.EASE()
    if name == "ials":
        return B.IALS(random_state=seed, num_threads=args.threads)
    if name == "bpr":
        return B.BPRMF(random_state=seed, num_threads=args.threads)
    if name == "ampcf":
        return B.AMPCF(random_state=seed)
    raise UsageError(f"unknown model {name!r}")  # pragma: no cover - argparse checks


def _settings_of(model: Any) -> str:
    """A model's constructor settings, as ``name=value`` pairs."""
    params = model.get_params() if hasattr(model, "get_params") else {}
    params = {k: v for k, v in params.items() if k not in ("progress", "device", "n_threads", "num_threads")}
    return ", ".join(f"{k}={v}" for k, v in params.items()) or type(model).__name__


def evaluation_display(table: Any):
    """``evaluate``'s tidy frame as one row per metric@k (marked ^ when higher is better, v
    when lower) and one column per model, each cell ``value [low, high]``."""
    import pandas as pd

    from bayes_persona.evaluation import _LOWER_IS_BETTER

    def cell(r) -> str:
        ci = "" if pd.isna(r["low"]) else f" [{r['low']:.3f}, {r['high']:.3f}]"
        return f"{r['value']:.3f}{ci}"

    t = table.copy()
    if "protocol" in t and t["protocol"].nunique() > 1:
        t["metric"] = t["protocol"] + " " + t["metric"]
    t["column"] = [
        f"{m}@{int(k)} {'v' if m.split(' ')[-1] in _LOWER_IS_BETTER else '^'}"
        for m, k in zip(t["metric"], t["k"], strict=True)
    ]
    t["cell"] = t.apply(cell, axis=1)
    wide = t.pivot_table(index="column", columns="model", values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(index=pd.unique(t["column"]), columns=pd.unique(t["model"]))
    return wide.rename_axis(index="metric@k", columns=None)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd
    from tqdm.auto import tqdm

    import bayes_persona as bp

    data, desc, _ = _load_data(args)
    split = bp.random_holdout(data, test_fraction=args.test_fraction, seed=args.split_seed)
    items = getattr(data, "items", None)
    extra: dict[str, Any] = {}
    if args.n_boot is not None:
        extra["n_boot"] = args.n_boot
    results, settings = [], {}
    bar = tqdm(args.models, desc="models", disable=not _progress(args), leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        if name == "ours":
            model = bp.PersonaRecommender(**_model_kwargs(args), progress=_progress(args), n_threads=args.threads)
        else:
            model = _make_baseline(name, args)
        start = time.perf_counter()
        res = bp.evaluate(
            model,
            split.train,
            split.test,
            k=tuple(args.k),
            items=items,
            protocol=args.protocol,
            model_name=name,
            **extra,
        )
        logger.info("%s: fit and evaluated in %.1f s", name, time.perf_counter() - start)
        results.append(res)
        settings[name] = _settings_of(model)
    table = pd.concat(results, ignore_index=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
    print(
        f"{desc.get('variant', desc['source'])}: {desc['n_users']} users, {desc['n_items']} items, "
        f"{desc['n_interactions']} interactions; test fraction {args.test_fraction:g}"
    )
    print(evaluation_display(table).to_string())
    print("(^ higher is better, v lower is better; [low, high] is the 95% bootstrap interval over users)")
    print("settings:")
    for name, model in settings.items():
        print(f"  {name}: {model}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    model_path = _model_path(args.model)
    model = _load_model(args.model)
    users = None
    if args.users:
        users = [parse_id(u, model.user_vocab_, "user") for u in args.users]
    omitted = write_report(
        model,
        args.out,
        users=users,
        n_users=args.n_users,
        n_items=args.n_items,
        title=f"bayes_persona report: {model_path.parent.name or model_path.name}",
        progress=_progress(args),
    )
    note = f" (omitted: {', '.join(omitted)})" if omitted else ""
    print(f"wrote {args.out}{note}")
    return 0


# --------------------------------------------------------------------------- report
def _figure_of(obj: Any):
    """The matplotlib Figure behind a plotting function's return value (a Figure, Axes,
    array of Axes, seaborn grid, or ``(fig, ax)``); the current figure for ``None``."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.figure import Figure

    if isinstance(obj, Figure):
        return obj
    if isinstance(obj, (tuple, list, np.ndarray)) and len(obj):
        return _figure_of(np.asarray(obj, dtype=object).flat[0])
    for attr in ("figure", "fig"):
        fig = getattr(obj, attr, None)
        if isinstance(fig, Figure):
            return fig
        if fig is not None and isinstance(getattr(fig, "figure", None), Figure):  # SubFigure
            return fig.figure
    return plt.gcf()


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fallback_elbo(model):
    import matplotlib.pyplot as plt
    import numpy as np

    elbo = np.asarray(model.elbo_, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(np.arange(1, len(elbo) + 1), elbo, lw=0.6, alpha=0.5, label="per step")
    w = max(1, len(elbo) // 50)
    if len(elbo) >= w > 1:
        smooth = np.convolve(elbo, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(w, len(elbo) + 1), smooth, lw=1.5, label=f"moving mean ({w})")
    ax.set_xlabel("SVI step")
    ax.set_ylabel("ELBO")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def _try_plot(fn, attempts: list[tuple], what: str, failures: list[str]):
    """Call ``fn`` with the first argument tuple it accepts; the figure, or None."""
    import matplotlib.pyplot as plt

    last: Exception | None = None
    for a in attempts:
        try:
            return _figure_of(fn(*a))
        except TypeError as exc:  # signature mismatch: try the next form
            last = exc
            plt.close("all")
        except Exception as exc:  # a plotting bug must not sink the report
            last = exc
            plt.close("all")
            break
    logger.warning("report: omitting %s: %s: %s", what, type(last).__name__, last)
    failures.append(what)
    return None


#: Names a plot may have in :mod:`bayes_persona.plotting`, first match used.
PLOT_NAMES = {
    "elbo": ("plot_elbo", "elbo_trace"),
    "persona_map": ("plot_persona_map", "persona_map"),
    "explanations": ("plot_explanations", "explanation_forest"),
}


def _plot_function(plotting: Any, kind: str):
    for name in PLOT_NAMES[kind]:
        fn = getattr(plotting, name, None)
        if callable(fn):
            return fn
    return None


def write_report(
    model: Any,
    path: str | Path,
    users: Sequence[Any] | None = None,
    n_users: int = 3,
    n_items: int = 5,
    title: str = "bayes_persona report",
    progress: bool = False,
) -> list[str]:
    """Write one self-contained HTML diagnostics report of a fitted model.

    The ELBO trace is always there (``bayes_persona.plotting.plot_elbo`` when it exists,
    else a plain matplotlib plot). For each of a few users come a table of personas, the
    persona map (``plot_persona_map``), the explanation forest of their top ``n_items``
    recommendations (``plot_explanations``) and a table of those recommendations. A plot
    whose function is missing or fails is omitted with a warning.

    Returns
    -------
    list of str
        What was omitted.
    """
    from tqdm.auto import tqdm

    try:
        from bayes_persona import plotting
    except Exception as exc:  # absent, or broken while being edited
        logger.warning(
            "report: bayes_persona.plotting is unavailable (%s: %s); omitting persona maps and "
            "explanation forests, plotting the ELBO trace with matplotlib",
            type(exc).__name__,
            exc,
        )
        plotting = None
    omitted: list[str] = []
    sections: list[str] = []

    fn = _plot_function(plotting, "elbo")
    fig = _try_plot(fn, [(model,), (model.elbo_,)], "ELBO trace", omitted) if fn else None
    if fig is None:
        fig = _fallback_elbo(model)
    sections.append(_section("ELBO trace", _img(_png(fig), "ELBO trace")))

    if users is None:
        users = list(model.user_vocab_.ids[:n_users])
    pmap = _plot_function(plotting, "persona_map")
    forest = _plot_function(plotting, "explanations")
    for kind, f in (("persona_map", pmap), ("explanations", forest)):
        if f is None:
            if plotting is not None:
                logger.warning(
                    "report: omitting %s plots: bayes_persona.plotting has none of %s",
                    kind,
                    ", ".join(PLOT_NAMES[kind]),
                )
            omitted.append(kind)
    sections.append(_section("Posterior predictive checks", _ppc_html(model, omitted)))
    for user in tqdm(users, desc="report", disable=not progress, leave=False):
        parts = [_h3("Personas"), _html_table(personas_display(model.personas(user), model.hdi_prob))]
        recs = model.recommend([user], n=n_items)
        if pmap is not None:
            fig = _try_plot(pmap, [(model, user)], f"persona_map(user {user})", omitted)
            if fig is not None:
                parts += [_h3("Persona map: the categories each persona explains"),
                          _img(_png(fig), f"persona map of user {user}")]  # fmt: skip
        parts.append(_h3(f"Top {len(recs)} recommendations and the personas that explain them"))
        if forest is not None:
            items = recs["item_id"].tolist()
            attempts = [(recs,), (model, user, items)]
            fig = _try_plot(forest, attempts, f"explanations(user {user})", omitted)
            if fig is not None:
                parts.append(_img(_png(fig), f"explanation forest of user {user}"))
        parts.append(_html_table(recommendations_display(recs, model.hdi_prob)))
        sections.append(_section(f"User {html.escape(str(user))}", "\n".join(parts)))

    params = model.get_params()
    params.pop("progress", None)
    health = model.summary()
    summary = (
        "<h2>Fit</h2>"
        + "".join(f"<p>{html.escape(line)}</p>" for line in health._fit_lines() + [health._active_line()])
        + _fit_health_note(model)
        + f"<pre>{html.escape(json.dumps(params, indent=1, default=str))}</pre>"
    )
    if omitted:
        summary += f"<p class='note'>Omitted: {html.escape(', '.join(omitted))}.</p>"
    doc = _HTML.format(
        title=html.escape(title),
        summary=summary,
        body="\n".join(sections),
        version=html.escape(_version()),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return omitted


def _h3(text: str) -> str:
    return f"<h3>{html.escape(text)}</h3>"


def _fit_health_note(model: Any) -> str:
    if model.converged_:
        return (
            "<p>Fit health: the ELBO had levelled off by the noise-aware test when the fit "
            "ended, so the intervals below describe a settled posterior.</p>"
        )
    return (
        "<p class='note'>Fit health: the fit ended at max_epochs while its ELBO was still "
        "rising, or far below its best; the posterior, and so every interval in this report, "
        "may not have settled. Refit with more epochs (or a smaller learning rate).</p>"
    )


def _ppc_html(model: Any, omitted: list[str]) -> str:
    """The posterior predictive checks' aggregate rows as a table, with how to read them."""
    try:
        checks = model.posterior_predictive_checks(num_samples=50)
    except Exception as exc:  # a report is still useful without them
        logger.warning("report: posterior predictive checks failed (%s: %s)", type(exc).__name__, exc)
        omitted.append("posterior predictive checks")
        return "<p class='note'>The posterior predictive checks failed; see the log.</p>"
    cols = ["check", "statistic", "observed", "rep_mean", "rep_q05", "rep_q95", "ppp"]
    table = checks[cols].copy()
    for c in cols[2:]:
        table[c] = table[c].map(lambda v: f"{v:.3g}")
    return (
        "<p>Each statistic of the training data (observed) against its distribution over "
        "50 data sets replicated from the posterior (mean and 90% range). A posterior "
        "predictive p-value (ppp) near 0 or 1 flags a feature of the data the model does "
        "not reproduce.</p>" + _html_table(table)
    )


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _section(title: str, body: str) -> str:
    return f"<section><h2>{title}</h2>\n{body}\n</section>"


def _html_table(table: Any) -> str:
    return table.to_html(index=False, border=0, classes="tbl")


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}
img {{ max-width: 100%; }} pre {{ background: #f6f6f6; padding: .5em; font-size: 85%; }}
.tbl {{ border-collapse: collapse; margin: .5em 0; }}
.tbl td, .tbl th {{ padding: .2em .8em; border-bottom: 1px solid #ddd; text-align: left; }}
.note {{ color: #a60; }}
</style></head><body>
<h1>{title}</h1>
{summary}
{body}
<footer><p>bayes_persona {version}</p></footer>
</body></html>
"""


# --------------------------------------------------------------------------- main
def _usage_errors() -> tuple[type[BaseException], ...]:
    from bayes_persona.exceptions import (
        DatasetNotFoundError,
        DataTypeError,
        DataValidationError,
        SaveFormatError,
        UnknownIdError,
    )

    return (
        UsageError,
        DataValidationError,
        DataTypeError,
        UnknownIdError,
        DatasetNotFoundError,
        SaveFormatError,
        FileNotFoundError,
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bayes-persona`` with ``argv`` (default: ``sys.argv[1:]``); the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse printed them)
        return exc.code if isinstance(exc.code, int) else 2
    _configure_logging(args.verbose)
    try:
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(args.threads)
        else:  # torch reads it when a command first imports it; --help never does
            os.environ["OMP_NUM_THREADS"] = str(args.threads)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `bayes-persona recommend ... | head`
        return 0
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        code = 2 if isinstance(exc, _usage_errors()) else 1
        prefix = (
            "" if code == 2 or isinstance(exc, _library_errors()) else f"{type(exc).__name__}: "
        )
        print(f"{PROG}: error: {prefix}{_one_line(exc)}", file=sys.stderr)
        return code


def _library_errors() -> tuple[type[BaseException], ...]:
    from bayes_persona.exceptions import BayesPersonaError

    return (BayesPersonaError,)


if __name__ == "__main__":
    sys.exit(main())
