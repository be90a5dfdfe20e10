"""Helpers shared by the command-line commands and the HTML report.

This module holds what several commands need: reading the chosen data source
(:func:`load_data`), the model options as estimator arguments, finding and loading a
saved model (checked against the sha256 its fit folder records), parsing a typed id in
the model's id kind (:func:`parse_id`), and the display forms of the ``recommend``,
``explain`` and ``personas`` frames with the printer :func:`emit_table`. Heavy imports happen
inside the functions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from bayes_persona.cli.options import CONFIG_FILE, MODEL_FILE, UsageError, logger


# --------------------------------------------------------------------------- helpers
def show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet


def load_data(args: argparse.Namespace):
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


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = {
        "personas": "n_personas",
        "factors": "n_factors",
        "epochs": "max_epochs",
        "batch_size": "batch_size",
        "feedback": "feedback",
        "guide": "guide",
        "prototypes": "n_prototypes",
        "user_particles": "user_particles",
        "seed": "random_state",
    }
    return {v: getattr(args, k) for k, v in names.items() if getattr(args, k) is not None}


def resolve_model_path(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        raise UsageError(
            f"--model: no saved model at {p} (run 'bayes-persona fit --out DIR' first)"
        )
    return p


def load_model(path: str):
    import bayes_persona as bp

    model_path = resolve_model_path(path)
    config_path = model_path.parent / CONFIG_FILE
    if config_path.exists():  # a fit folder: its config.json must describe this model.pt
        try:
            recorded = json.loads(config_path.read_text()).get("model_sha256")
        except (ValueError, AttributeError) as exc:
            raise UsageError(f"--model: {config_path} is not valid JSON ({exc}); refit the folder") from None
        if recorded is not None and recorded != sha256_file(model_path):
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


def emit_table(frame: Any, fmt: str, table: Any, title: str) -> None:
    """Print ``frame`` as csv/json, or ``table`` (its display form) under ``title``."""
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=2) + "\n")
    else:
        sys.stdout.write(f"{title}\n{table.to_string(index=False)}\n")




def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
