"""The ``report`` command: one self-contained HTML diagnostics file of a saved model.

This module holds :func:`write_report` and its HTML pieces: the ELBO trace, the
posterior predictive checks' table and, for a few users, their personas, persona map,
explanation forest and recommendations, with every plot embedded as a PNG. A plot that
is missing from :mod:`bayes_persona.diagnostics.plotting` or fails is omitted with a
warning.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bayes_persona.cli.helpers import (
    load_model,
    parse_id,
    personas_display,
    recommendations_display,
    resolve_model_path,
    show_progress,
)
from bayes_persona.cli.options import logger, version_string


def cmd_report(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    model_path = resolve_model_path(args.model)
    model = load_model(args.model)
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
        progress=show_progress(args),
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


#: Names a plot may have in :mod:`bayes_persona.diagnostics.plotting`, first match used.
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

    The ELBO trace is always there (``bayes_persona.diagnostics.plotting.plot_elbo`` when it exists,
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
        from bayes_persona.diagnostics import plotting
    except Exception as exc:  # absent, or broken while being edited
        logger.warning(
            "report: bayes_persona.diagnostics.plotting is unavailable (%s: %s); omitting persona maps and "
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
                    "report: omitting %s plots: bayes_persona.diagnostics.plotting has none of %s",
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
        + "".join(f"<p>{html.escape(line)}</p>" for line in health.headline())
        + _fit_health_note(model)
        + f"<pre>{html.escape(json.dumps(params, indent=1, default=str))}</pre>"
    )
    if omitted:
        summary += f"<p class='note'>Omitted: {html.escape(', '.join(omitted))}.</p>"
    doc = _HTML.format(
        title=html.escape(title),
        summary=summary,
        body="\n".join(sections),
        version=html.escape(version_string()),
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
