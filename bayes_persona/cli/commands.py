"""The commands of ``bayes-persona``: demo, fit, recommend, explain, personas, evaluate.

Each ``cmd_*`` function takes the parsed arguments and returns the exit code. ``fit``
writes its folder (model.pt, config.json, elbo.csv) into a staging folder first and
moves it into place at the end; ``evaluate`` fits each chosen model on a random holdout
and prints the metrics table. The ``report`` command lives in
:mod:`bayes_persona.cli.report`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bayes_persona.cli.helpers import (
    emit_table,
    explanation_display,
    load_data,
    load_model,
    model_kwargs,
    parse_id,
    personas_display,
    recommendations_display,
    sha256_file,
    show_progress,
)
from bayes_persona.cli.options import (
    CONFIG_FILE,
    ELBO_FILE,
    MODEL_FILE,
    TRUTH_FILE,
    UsageError,
    logger,
)


# --------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    from bayes_persona.demo import SMOKE, run_demo

    kw: dict[str, Any] = dict(SMOKE) if args.smoke else {}
    for name in ("n_users", "n_items", "n_tastes", "epochs"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.show is not None:
        kw["n_show"] = args.show
    run_demo(seed=args.seed, progress=show_progress(args), **kw)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import bayes_persona as bp

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    if args.resume and args.checkpoint_dir is None:
        raise UsageError("--resume needs --checkpoint-dir (where the checkpoint lies)")
    data, desc, truth = load_data(args)
    model = bp.PersonaRecommender(**model_kwargs(args), progress=show_progress(args), n_threads=args.threads)
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
        "model_sha256": sha256_file(stage / MODEL_FILE),
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
    :func:`load_model` refuses (never a silently mixed folder)."""
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
    model = load_model(args.model)
    if args.hdi_prob is not None:
        model.set_params(hdi_prob=args.hdi_prob)
    user = parse_id(args.user, model.user_vocab_, "user")
    recs = model.recommend([user], n=args.n, exclude_seen=not args.include_seen)
    title = f"top {len(recs)} items for user {user} (persona 0 = the user's most prevalent):"
    emit_table(recs, args.format, recommendations_display(recs, model.hdi_prob), title)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    user = parse_id(args.user, model.user_vocab_, "user")
    items = [parse_id(i, model.item_vocab_, "item") for i in args.item]
    hdi_prob = args.hdi_prob if args.hdi_prob is not None else model.hdi_prob
    frame = model.explain(user, items, hdi_prob=hdi_prob)
    title = f"which persona explains each item for user {user}:"
    emit_table(frame, args.format, explanation_display(frame, hdi_prob), title)
    return 0


def cmd_personas(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    user = parse_id(args.user, model.user_vocab_, "user")
    hdi_prob = args.hdi_prob if args.hdi_prob is not None else model.hdi_prob
    frame = model.personas(user, n_items=args.n_items, hdi_prob=hdi_prob)
    title = f"personas of user {user} (0 = most prevalent):"
    emit_table(frame, args.format, personas_display(frame, hdi_prob), title)
    return 0


def _make_baseline(name: str, args: argparse.Namespace):
    from bayes_persona.baselines import BASELINES

    if name not in BASELINES:  # pragma: no cover - argparse checks
        raise UsageError(f"unknown model {name!r}")
    seed = args.seed if args.seed is not None else 0
    # each baseline's seed and thread settings, where it has them (EASE and popularity have none)
    kwargs = {"ials": {"random_state": seed, "num_threads": args.threads},
              "bpr": {"random_state": seed, "num_threads": args.threads},
              "ampcf": {"random_state": seed}}.get(name, {})  # fmt: skip
    return BASELINES[name](**kwargs)


def _settings_of(model: Any) -> str:
    """A model's constructor settings, as ``name=value`` pairs."""
    params = model.get_params() if hasattr(model, "get_params") else {}
    params = {k: v for k, v in params.items() if k not in ("progress", "device", "n_threads", "num_threads")}
    return ", ".join(f"{k}={v}" for k, v in params.items()) or type(model).__name__


def evaluation_display(table: Any):
    """``evaluate``'s tidy frame as one row per metric@k (marked ^ when higher is better, v
    when lower) and one column per model, each cell ``value [low, high]``."""
    import pandas as pd

    from bayes_persona.evaluation.protocol import LOWER_IS_BETTER

    def cell(r) -> str:
        ci = "" if pd.isna(r["low"]) else f" [{r['low']:.3f}, {r['high']:.3f}]"
        return f"{r['value']:.3f}{ci}"

    t = table.copy()
    if "protocol" in t and t["protocol"].nunique() > 1:
        t["metric"] = t["protocol"] + " " + t["metric"]
    t["column"] = [
        f"{m}@{int(k)} {'v' if m.split(' ')[-1] in LOWER_IS_BETTER else '^'}"
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

    data, desc, _ = load_data(args)
    split = bp.random_holdout(data, test_fraction=args.test_fraction, seed=args.split_seed)
    items = getattr(data, "items", None)
    extra: dict[str, Any] = {}
    if args.n_boot is not None:
        extra["n_boot"] = args.n_boot
    results, settings = [], {}
    bar = tqdm(args.models, desc="models", disable=not show_progress(args), leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        if name == "ours":
            model = bp.PersonaRecommender(**model_kwargs(args), progress=show_progress(args), n_threads=args.threads)
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
