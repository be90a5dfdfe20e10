"""The ``bayes-persona`` program: its argument parser and :func:`main`.

:func:`build_parser` declares every command with its options (the shared option groups
come from :mod:`bayes_persona.cli.options`); :func:`main` parses, configures logging and
threads, runs the command and maps errors to exit codes (0 success, 1 runtime error,
2 usage error or bad input) with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from bayes_persona.cli.commands import (
    cmd_demo,
    cmd_evaluate,
    cmd_explain,
    cmd_fit,
    cmd_personas,
    cmd_recommend,
)
from bayes_persona.cli.options import (
    MODEL_CHOICES,
    PROG,
    UsageError,
    common_options,
    configure_logging,
    data_options,
    fmt_help,
    int_list_arg,
    model_list_arg,
    model_options,
    positive_int_arg,
    probability_arg,
    version_string,
)
from bayes_persona.cli.report import cmd_report


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``bayes-persona``."""
    top = argparse.ArgumentParser(
        prog=PROG,
        parents=[common_options(suppress=False)],
        description="Explainable recommendation with a Bayesian attentive multi-persona model.",
        epilog="Run 'bayes-persona COMMAND --help' for a command's options. Exit codes: 0 ok, "
        "1 runtime error, 2 usage error or bad input.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {version_string()}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [common_options(suppress=True)]

    def add(name: str, help_: str, desc: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, parents=common, **fmt_help(desc))

    p = add(
        "demo",
        "fit on planted-persona data and compare with the truth",
        "Fit the model on synthetic users with planted tastes, then show a few users'\n"
        "fitted personas beside their planted tastes, their top recommendations with the\n"
        "explaining persona and its interval, and the persona-recovery figures.",
    )
    p.add_argument("--smoke", action="store_true", help="a tiny version that runs in seconds")
    p.add_argument("--n-users", type=positive_int_arg, default=None, help="users (default: 500)")
    p.add_argument("--n-items", type=positive_int_arg, default=None, help="items (default: 800)")
    p.add_argument("--n-tastes", type=positive_int_arg, default=None, help="tastes (default: 6)")
    p.add_argument("--seed", type=int, default=0, help="data and model seed (default: 0)")
    p.add_argument(
        "--show",
        type=positive_int_arg,
        default=None,
        metavar="N",
        help="users to show (default: 3; 1 with --smoke)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int_arg,
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
    data_options(p)
    model_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    ck = p.add_argument_group("checkpoints")
    ck.add_argument("--checkpoint-dir", metavar="DIR", default=None, help="save resumable fit state here")
    ck.add_argument(
        "--checkpoint-every", type=positive_int_arg, default=100, metavar="STEPS",
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
            type=probability_arg,
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
    p.add_argument("--n", type=positive_int_arg, default=10, help="items (default: 10)")
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
        "--n-items", type=positive_int_arg, default=5, help="top items per persona (default: 5)"
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
    data_options(p)
    model_options(p)
    p.add_argument(
        "--models",
        type=model_list_arg,
        default=["ours", "popular", "ease"],
        help=f"comma-separated, from {','.join(MODEL_CHOICES)} (default: ours,popular,ease)",
    )
    p.add_argument(
        "--k",
        type=int_list_arg,
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
        type=probability_arg,
        default=0.2,
        help="share of interactions held out (default: 0.2)",
    )
    p.add_argument("--split-seed", type=int, default=0, help="split seed (default: 0)")
    p.add_argument(
        "--n-boot",
        type=positive_int_arg,
        default=None,
        help="bootstrap resamples (default: evaluate's)",
    )
    p.add_argument("--out", metavar="CSV", help="also write the table to this CSV file")
    p.set_defaults(func=cmd_evaluate)

    p = add(
        "report",
        "write an HTML diagnostics report for a saved model",
        "One self-contained HTML file (plots embedded as PNG) with the ELBO trace and,\n"
        "where bayes_persona.diagnostics.plotting provides them, a few users' persona maps and\n"
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
    p.add_argument("--n-users", type=positive_int_arg, default=3, help="users to show (default: 3)")
    p.add_argument(
        "--n-items",
        type=positive_int_arg,
        default=5,
        help="recommended items per explanation forest (default: 5)",
    )
    p.set_defaults(func=cmd_report)
    return top


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
    configure_logging(args.verbose)
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
