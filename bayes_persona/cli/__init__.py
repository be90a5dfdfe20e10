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

# The names of the former single module ``bayes_persona/cli.py``, re-exported.
# ruff: noqa: F401
from bayes_persona.cli.app import build_parser, main
from bayes_persona.cli.commands import (
    cmd_demo,
    cmd_evaluate,
    cmd_explain,
    cmd_fit,
    cmd_personas,
    cmd_recommend,
    evaluation_display,
)
from bayes_persona.cli.helpers import (
    explanation_display,
    parse_id,
    personas_display,
    recommendations_display,
    sha256_file,
)
from bayes_persona.cli.options import (
    CONFIG_FILE,
    ELBO_FILE,
    MODEL_CHOICES,
    MODEL_DEFAULTS,
    MODEL_FILE,
    MOVIELENS_CHOICES,
    PROG,
    TRUTH_FILE,
    UsageError,
)
from bayes_persona.cli.report import PLOT_NAMES, cmd_report, write_report

__all__ = ["main", "build_parser", "write_report"]
