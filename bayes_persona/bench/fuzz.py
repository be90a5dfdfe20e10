"""Robustness fuzz: ``python -m bayes_persona.bench fuzz [--cases 500] [--seed 0]``.

Draws ``--cases`` inputs with hypothesis across the public entry points --
:func:`~bayes_persona.load_interactions`, ``fit``, ``recommend``, ``explain``, ``score`` and
the ``bayes-persona`` command line -- spanning the ranges the library must police (ids
inside and outside int64, unsigned, float, boolean, datetime and mixed ids; ratings that are
finite, NaN, infinite or beyond float32; parameters below, inside and above their documented
ranges; known and unknown ids; interval levels in and out of (0, 1)). Each case ends in one
of four ways:

``ok``
    a result, which then passes that entry point's invariants (row counts, finite scores,
    probabilities in [0, 1], every point inside its interval, ids returned unchanged);
``refused``
    a named library error (a :class:`~bayes_persona.exceptions.BayesPersonaError`, or the
    CLI's one-line ``error:`` with exit code 2);
``raw``
    any other exception (a deep traceback a user should never see);
``wrong``
    a result that breaks an invariant (a silent wrong answer);
``hang``
    no answer within ``--case-timeout`` seconds.

The counts are printed and, with ``--out``, written as JSON with the failing cases. The
benchmark passes when ``raw``, ``wrong`` and ``hang`` are all zero. Needs ``hypothesis``
(``pip install -e ".[dev]"``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import signal
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ENTRY_POINTS = ("load_interactions", "fit", "recommend", "explain", "score", "cli")
OUTCOMES = ("ok", "refused", "raw", "wrong", "hang")


class _Hang(Exception):
    pass


class _Wrong(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    def handler(signum, frame):  # noqa: ARG001
        raise _Hang()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise _Wrong(what)


# ----------------------------------------------------------------------------- strategies
def _strategies():
    from hypothesis import strategies as st

    i64 = np.iinfo(np.int64)
    int_ids = st.one_of(
        st.integers(0, 40),
        st.integers(i64.min, i64.max),
        st.sampled_from([2**63, 2**64 + 1, -(2**63) - 1]),
    )
    bad_ids = st.one_of(
        st.floats(allow_nan=True), st.booleans(), st.none(), st.just(pd.Timestamp("2020-01-01")),
    )  # fmt: skip
    str_ids = st.text(min_size=0, max_size=4)
    id_values = st.one_of(int_ids, str_ids, bad_ids)
    ratings = st.one_of(
        st.floats(-5, 5),
        st.sampled_from([math.nan, math.inf, -math.inf, 3.5e38, 1e300, -1e39, 0.0]),
        st.just("4"),
    )
    probs = st.one_of(
        st.none(), st.floats(0.01, 0.99), st.floats(0.01, 0.99),
        st.sampled_from([0, 1, -0.1, 1.5, math.nan, True, "0.9"]),
    )  # fmt: skip
    return st, id_values, ratings, probs


def _mostly(st, good, bad, p_good: float = 0.8):
    """``good`` with probability ``p_good``, else ``bad``: valid paths get exercised too."""
    return st.floats(0, 1).flatmap(lambda x: good if x < p_good else bad)


def _users(st, id_values):
    return _mostly(st, st.integers(1, 40), st.one_of(st.integers(41, 60), id_values))


def _items(st, id_values):
    return _mostly(st, st.integers(10001, 10060), st.one_of(st.integers(20000, 20010), id_values))


# --------------------------------------------------------------------------- the fixture
def _fixture():
    """A small planted world and a model fitted on it, shared by the cases."""
    import torch

    import bayes_persona as bp

    torch.set_num_threads(1)
    data, _ = bp.make_synthetic(n_users=40, n_items=60, n_tastes=3, interactions_per_user=(5, 15), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bp.PersonaRecommender(n_personas=3, n_factors=4, max_epochs=3, n_draws=10, progress=False)
        model.fit(data)
    return data, model


# -------------------------------------------------------------------------------- cases
def _case_load(draw, st, id_values, ratings, probs, ctx) -> None:  # noqa: ARG001
    import bayes_persona as bp

    n = draw(st.integers(0, 6))
    users = draw(st.lists(_mostly(st, st.integers(0, 40), id_values, 0.6), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    frame = pd.DataFrame({"user_id": pd.Series(users, dtype=object), "item_id": items})
    with_rating = draw(st.booleans())
    if with_rating:
        good = st.floats(-5, 5, allow_nan=False)
        frame["rating"] = pd.Series(draw(st.lists(_mostly(st, good, ratings, 0.6), min_size=n, max_size=n)), dtype=object)
        if draw(st.booleans()):
            with contextlib.suppress(TypeError, ValueError):
                frame["rating"] = frame["rating"].astype(float)
    if draw(st.booleans()):
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            frame["user_id"] = frame["user_id"].astype(np.uint64)
    out = bp.load_interactions(
        frame, rating_col="rating" if with_rating else None, duplicates="aggregate"
    )
    _check(len(out) <= len(frame), "more rows out than in")
    kept = set(map(str, out["user_id"].tolist()))
    _check(kept <= set(map(str, frame["user_id"].tolist())), "user ids changed on the way")
    if with_rating:
        r = out["rating"].to_numpy(dtype=np.float64)
        _check(bool(np.isfinite(r).all() and (np.abs(r) <= np.finfo(np.float32).max).all()), "non-finite rating")


def _case_fit(draw, st, id_values, ratings, probs, ctx) -> None:  # noqa: ARG001
    import bayes_persona as bp

    data = ctx["data"]
    params = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "n_personas": _mostly(st, st.integers(1, 5), st.sampled_from([-1, 0, 10**6])),
                "n_factors": _mostly(st, st.integers(1, 8), st.sampled_from([-1, 0, 10**6])),
                "init_scale": _mostly(st, st.sampled_from([1e-3, 0.05, 1.0, 10.0]), st.sampled_from([1e10, -1.0, math.nan])),
                "random_state": _mostly(st, st.sampled_from([0, 7, 2**63 - 1]), st.sampled_from([2**64, -1])),
                "n_draws": _mostly(st, st.sampled_from([2, 5]), st.sampled_from([1, 10**7])),
                "hdi_prob": probs.filter(lambda p: p is not None),
                "learning_rate": _mostly(st, st.sampled_from([1e-3, 0.01, 1.0]), st.sampled_from([1e3, 0.0, math.inf])),
                "batch_size": _mostly(st, st.sampled_from([1, 16, 64]), st.just(0)),
                "prevalence_concentration": _mostly(st, st.sampled_from([0.1, 1.0]), st.sampled_from([0.0, -1.0])),
            },
        )
    )
    model = bp.PersonaRecommender(max_epochs=2, progress=False, **params)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(data)
    except bp.ModelFitError:
        # a failed fit must leave a usable (finite) model or an unfitted one
        with contextlib.suppress(bp.NotFittedError, bp.ModelFitError):
            recs = model.recommend(data.ratings["user_id"].iloc[:2], n=3)
            _check(bool(np.isfinite(recs["score"]).all()), "non-finite scores after a failed fit")
        raise
    recs = model.recommend(data.ratings["user_id"].iloc[:2], n=3)
    _check(len(recs) == 6, f"recommend returned {len(recs)} rows, expected 6")
    _check_recs(recs)


def _check_recs(recs: pd.DataFrame) -> None:
    _check(bool(np.isfinite(recs["score"]).all()), "non-finite score")
    lo, p, hi = recs["persona_prob_low"], recs["persona_prob"], recs["persona_prob_high"]
    _check(bool(((0 <= lo) & (lo <= p) & (p <= hi) & (hi <= 1)).all()), "persona_prob outside its interval")


def _case_recommend(draw, st, id_values, ratings, probs, ctx) -> None:  # noqa: ARG001
    model = ctx["model"]
    users = draw(_mostly(st, st.lists(_users(st, id_values), max_size=4), _users(st, id_values), 0.7))
    n = draw(_mostly(st, st.integers(1, 70), st.sampled_from([-1, 0, 1.5, True, "3", None])))
    recs = model.recommend(users, n=n)
    n_users = 1 if np.isscalar(users) else len(users)
    _check(len(recs) <= n_users * min(int(n), len(model.item_vocab_)), "too many rows")
    _check_recs(recs)


def _case_explain(draw, st, id_values, ratings, probs, ctx) -> None:  # noqa: ARG001
    model = ctx["model"]
    user = draw(_users(st, id_values))
    items = draw(_mostly(st, st.lists(_items(st, id_values), max_size=4), _items(st, id_values), 0.7))
    frame = model.explain(user, items, hdi_prob=draw(probs))
    n = 1 if np.isscalar(items) else len(items)
    _check(len(frame) == n * model.n_personas, "explain row count")
    lo, p, hi = frame["persona_prob_low"], frame["persona_prob"], frame["persona_prob_high"]
    _check(bool(((0 <= lo) & (lo <= p) & (p <= hi) & (hi <= 1)).all()), "prob outside its interval")


def _case_score(draw, st, id_values, ratings, probs, ctx) -> None:  # noqa: ARG001
    model = ctx["model"]
    k = draw(st.integers(0, 4))
    users = draw(st.lists(_mostly(st, st.integers(1, 40), _users(st, id_values), 0.95), min_size=k, max_size=k))
    items = draw(st.lists(_mostly(st, st.integers(10001, 10060), _items(st, id_values), 0.95), min_size=k, max_size=k))
    scores = model.score(users, items)
    _check(np.shape(scores) == (k,), "score shape")
    _check(bool(np.isfinite(scores).all()), "non-finite score")


def _case_cli(draw, st, id_values, ratings, probs, ctx) -> None:  # noqa: ARG001
    from bayes_persona.cli import main

    folder = str(ctx["folder"])
    command = draw(st.sampled_from(["recommend", "explain", "personas"]))
    uid = draw(_mostly(st, st.integers(1, 40).map(str), st.sampled_from(["1_0", "\u0661", "-1", "", "9" * 30, "abc", " 3", "41"])))
    argv = [command, "--model", folder, "--user", uid]
    if command == "explain":
        argv += ["--item", *draw(st.lists(_mostly(st, st.integers(10001, 10060).map(str), st.sampled_from(["x", "20000"]), 0.9), min_size=1, max_size=3))]
    if command == "recommend" and draw(st.booleans()):
        argv += ["--n", draw(st.sampled_from(["0", "5", "-2", "1e3", "70"]))]
    if draw(st.booleans()):
        argv += ["--hdi-prob", draw(st.sampled_from(["0.5", "0.9", "0", "1", "nan", "x"]))]
    argv += ["--format", draw(st.sampled_from(["table", "json", "csv"]))]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    last = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    if code == 0:
        _check(bool(out.getvalue().strip()), "exit 0 without output")
        return
    msg = last[-1] if last else ""
    if code == 2 and "error:" in msg:
        raise _Refused(msg)
    raise RuntimeError(f"exit {code}: {msg}")


class _Refused(Exception):
    pass


CASES = {
    "load_interactions": _case_load, "fit": _case_fit, "recommend": _case_recommend,
    "explain": _case_explain, "score": _case_score, "cli": _case_cli,
}  # fmt: skip


# ------------------------------------------------------------------------------- runner
def run_fuzz(n_cases: int = 500, seed: int = 0, case_timeout: float = 30.0) -> dict[str, Any]:
    """Run ``n_cases`` drawn cases; returns the counts per entry point and outcome, and the
    failing cases (``raw``, ``wrong``, ``hang``) with their messages."""
    import tempfile

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hyp_seed
    from hypothesis import strategies as hst

    import bayes_persona as bp

    st, id_values, ratings, probs = _strategies()
    data, model = _fixture()
    tmp = tempfile.TemporaryDirectory(prefix="bp-fuzz-")
    folder = Path(tmp.name) / "model"
    folder.mkdir()
    model.save(folder / "model.pt")
    ctx = {"data": data, "model": model, "folder": folder}
    counts: Counter = Counter()
    failures: list[dict] = []

    @hyp_seed(seed)
    @settings(max_examples=n_cases, phases=[Phase.generate], deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(hst.data())
    def one(d) -> None:
        entry = d.draw(hst.sampled_from(ENTRY_POINTS), "entry point")
        outcome, detail = "ok", ""
        try:
            with _time_limit(case_timeout), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                CASES[entry](d.draw, st, id_values, ratings, probs, ctx)
        except _Hang:
            outcome, detail = "hang", f"no answer in {case_timeout:g} s"
        except _Wrong as exc:
            outcome, detail = "wrong", str(exc)
        except (_Refused, bp.BayesPersonaError, FileNotFoundError) as exc:
            outcome = "refused"
            detail = str(exc)
        except Exception as exc:  # noqa: BLE001 - counting exactly these is the point
            outcome, detail = "raw", f"{type(exc).__name__}: {exc}"
        counts[(entry, outcome)] += 1
        if outcome in ("raw", "wrong", "hang"):
            failures.append({"entry_point": entry, "outcome": outcome, "detail": detail[:500]})

    start = time.perf_counter()
    try:
        one()
    finally:
        tmp.cleanup()
    table = {e: {o: counts[(e, o)] for o in OUTCOMES} for e in ENTRY_POINTS}
    totals = {o: sum(t[o] for t in table.values()) for o in OUTCOMES}
    return {
        "cases": sum(totals.values()),
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "totals": totals,
        "by_entry_point": table,
        "failures": failures,
        "passed": totals["raw"] == 0 and totals["wrong"] == 0 and totals["hang"] == 0,
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"fuzz: {report['cases']} cases (seed {report['seed']}, {report['seconds']} s)"]
    lines.append(f"{'entry point':<18}" + "".join(f"{o:>9}" for o in OUTCOMES))
    for e, row in report["by_entry_point"].items():
        lines.append(f"{e:<18}" + "".join(f"{row[o]:>9}" for o in OUTCOMES))
    lines.append(f"{'total':<18}" + "".join(f"{report['totals'][o]:>9}" for o in OUTCOMES))
    for f in report["failures"][:20]:
        lines.append(f"  {f['outcome']} in {f['entry_point']}: {f['detail']}")
    lines.append("PASS: no raw exception, hang or silent wrong result" if report["passed"] else "FAIL")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bayes_persona.bench fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=500, help="drawn cases (default 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case-timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    ap.add_argument("--out", default=None, help="write the report as JSON here")
    args = ap.parse_args(argv)
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        ap.error("needs hypothesis: pip install -e '.[dev]'")
    report = run_fuzz(args.cases, args.seed, args.case_timeout)
    if args.out:
        from bayes_persona.provenance import stamp

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**report, "provenance": stamp()}, indent=2, default=str) + "\n")
    sys.stdout.write(format_report(report) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
