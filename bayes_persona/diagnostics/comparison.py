r"""Compare persona models by expected log predictive density (ELPD).

Two estimates of the ELPD of a model, from its ``InferenceData``
(:func:`bayes_persona.diagnostics.inference_data.to_inference_data`):

* **held-out** (:func:`heldout_elpd`, :func:`compare_heldout`): with a test split,
  :math:`\widehat{\mathrm{elpd}} = \sum_j \log \frac1S \sum_s p(y_j \mid \theta_s)` over the
  held-out interactions. It needs no importance sampling and is the default.
* **PSIS-LOO** (:func:`compare_loo`): leave-one-out ELPD of the training interactions by
  Pareto-smoothed importance sampling through ``arviz.loo`` / ``arviz.compare``. It is
  reliable only where the Pareto shape ``k`` of every interaction is below
  ``min(1 - 1/log10(S), 0.7)``; the table says, per model, whether that holds
  (``loo_valid``), and :func:`compare_models` refuses PSIS-LOO results that are not valid
  unless asked. The posterior draws are variational, so even with good ``k`` PSIS-LOO is
  approximate (it corrects the leave-one-out step, not the variational error).

Differences between models are paired over the same interactions, so their standard
error ``dse`` is much smaller than the models' own ``se``; a common reading is that a
difference below a few ``dse`` is not a clear preference.

References
----------
.. [1] A. Vehtari, A. Gelman, J. Gabry. "Practical Bayesian model evaluation using
   leave-one-out cross-validation and WAIC". Statistics and Computing 27, 2017.
.. [2] A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. "Pareto Smoothed Importance
   Sampling". JMLR 25(72), 2024.
.. [3] Y. Yao, A. Vehtari, D. Simpson, A. Gelman. "Using Stacking to Average Bayesian
   Predictive Distributions". Bayesian Analysis 13(3), 2018.
.. [4] T. Sivula, M. Magnusson, A. A. Matamoros, A. Vehtari. "Uncertainty in Bayesian
   Leave-One-Out Cross-Validation Based Model Comparison". arXiv:2008.10296, 2020.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayes_persona.exceptions import DataTypeError, DataValidationError
from bayes_persona.posterior import logmeanexp

__all__ = [
    "pointwise_heldout_elpd",
    "heldout_elpd",
    "compare_heldout",
    "compare_loo",
    "compare_models",
    "choose_n_personas",
    "stacking_weights",
    "pareto_k_threshold",
]

logger = logging.getLogger(__name__)

_HELDOUT_VARS = ("heldout_choice", "heldout_rating")
_TRAIN_VARS = ("choice", "rating")


def pareto_k_threshold(n_draws: int) -> float:
    """Largest Pareto ``k`` for which PSIS is reliable with ``n_draws`` draws,
    ``min(1 - 1 / log10(S), 0.7)`` (Vehtari et al. 2024)."""
    return float(min(1.0 - 1.0 / math.log10(max(n_draws, 11)), 0.7))


def _check_models(models: Any) -> dict[str, Any]:
    if not isinstance(models, Mapping):
        raise DataTypeError(
            f"models must be a mapping name -> InferenceData; got {type(models).__name__}"
        )
    if len(models) < 1:
        raise DataValidationError("models must hold at least one InferenceData; got none")
    out = {}
    for name, idata in models.items():
        if not hasattr(idata, "log_likelihood"):
            raise DataValidationError(f"models[{name!r}] has no log_likelihood group")
        out[str(name)] = idata
    return out


def _heldout_var(idata: Any, name: str) -> str:
    var = next((v for v in _HELDOUT_VARS if v in idata.log_likelihood), None)
    if var is None:
        raise DataValidationError(
            f"{name} has no held-out log-likelihood: build it with to_inference_data(model, test=...)"
        )
    return var


def pointwise_heldout_elpd(idata: Any) -> pd.Series:
    """Held-out ``log (1/S) sum_s p(y_j | theta_s)`` of every held-out interaction.

    Parameters
    ----------
    idata : arviz.InferenceData
        Built with ``test=...``.

    Returns
    -------
    Series, length n
        Indexed by a MultiIndex ``(user_id, item_id)``.
    """
    var = _heldout_var(idata, "idata")
    da = idata.log_likelihood[var]
    ll = da.values.reshape(-1, da.shape[-1])
    index = pd.MultiIndex.from_arrays(
        [
            idata.log_likelihood["heldout_user_id"].values,
            idata.log_likelihood["heldout_item_id"].values,
        ],
        names=["user_id", "item_id"],
    )
    return pd.Series(logmeanexp(ll, 0), index=index, name="elpd")


def heldout_elpd(idata: Any) -> dict[str, float]:
    """Held-out ELPD of one model.

    Returns
    -------
    dict
        ``elpd`` (sum), ``se`` (its standard error, ``sqrt(n var(elpd_j))``),
        ``elpd_mean`` (per interaction) and ``n``.
    """
    pw = pointwise_heldout_elpd(idata).to_numpy()
    n = len(pw)
    return {
        "elpd": float(pw.sum()),
        "se": float(math.sqrt(n * pw.var(ddof=1))) if n > 1 else float("nan"),
        "elpd_mean": float(pw.mean()),
        "n": n,
    }


def stacking_weights(pointwise: np.ndarray) -> np.ndarray:
    """Stacking weights maximising ``sum_j log sum_m w_m exp(elpd_jm)``.

    Parameters
    ----------
    pointwise : ndarray, shape (n, M)
        Pointwise log predictive densities of M models.

    Returns
    -------
    ndarray, shape (M,)
        Non-negative, summing to one.
    """
    from scipy.optimize import minimize

    lp = np.asarray(pointwise, dtype=float)
    M = lp.shape[1]
    if M == 1:
        return np.ones(1)
    shift = lp.max(axis=1, keepdims=True)
    dens = np.exp(lp - shift)

    def neg(z: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.exp(z - z.max())
        w /= w.sum()
        mix = dens @ w
        f = -np.sum(np.log(mix))
        g_w = -(dens / mix[:, None]).sum(0)
        g_z = w * (g_w - np.dot(w, g_w))
        return float(f), g_z

    res = minimize(neg, np.zeros(M), jac=True, method="L-BFGS-B")
    w = np.exp(res.x - res.x.max())
    return w / w.sum()


def compare_heldout(models: Mapping[str, Any]) -> pd.DataFrame:
    """Rank models by held-out ELPD on the same held-out interactions.

    Parameters
    ----------
    models : mapping name -> arviz.InferenceData
        Each built with ``test=...`` on the same test split and users.

    Returns
    -------
    DataFrame
        Indexed by model name, best first, with ``rank, elpd, se, elpd_diff, dse, weight,
        elpd_mean, n`` (the layout of ``arviz.compare``: ``elpd_diff`` and ``dse`` are the
        paired difference from the best model and its standard error; ``weight`` are
        stacking weights).

    Raises
    ------
    DataValidationError
        A model has no held-out log-likelihood, or the models were scored on different
        held-out interactions.
    """
    models = _check_models(models)
    series = {}
    for name, idata in models.items():
        _heldout_var(idata, f"models[{name!r}]")
        series[name] = pointwise_heldout_elpd(idata)
    names = list(series)
    ref = series[names[0]]
    for name in names[1:]:
        s = series[name]
        if len(s) != len(ref) or not s.index.sort_values().equals(ref.index.sort_values()):
            raise DataValidationError(
                f"models[{name!r}] was scored on other held-out interactions than "
                f"models[{names[0]!r}]; build every InferenceData with the same test and users"
            )
    P = np.column_stack([series[n].reindex(ref.index).to_numpy() for n in names])  # (n, M)
    n = P.shape[0]
    elpd = P.sum(0)
    best = int(np.argmax(elpd))
    diff = P[:, [best]] - P
    se = np.sqrt(n * P.var(axis=0, ddof=1)) if n > 1 else np.full(len(names), np.nan)
    dse = np.sqrt(n * diff.var(axis=0, ddof=1)) if n > 1 else np.full(len(names), np.nan)
    table = pd.DataFrame(
        {
            "elpd": elpd,
            "se": se,
            "elpd_diff": elpd[best] - elpd,
            "dse": dse,
            "weight": stacking_weights(P),
            "elpd_mean": elpd / n,
            "n": n,
        },
        index=pd.Index(names, name="model"),
    ).sort_values("elpd", ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(len(table)))
    return table


def compare_loo(models: Mapping[str, Any], *, method: str = "stacking") -> pd.DataFrame:
    """Compare models by PSIS-LOO on their training log-likelihood (``arviz.compare``).

    Parameters
    ----------
    models : mapping name -> arviz.InferenceData
        Each built *without* ``test`` (so its ``log_likelihood`` holds the training
        interactions), on the same training data and users.
    method : {"stacking", "BB-pseudo-BMA", "pseudo-BMA"}
        Weighting of ``arviz.compare``.

    Returns
    -------
    DataFrame
        ``arviz.compare``'s table (``rank, elpd_loo, p_loo, elpd_diff, weight, se, dse,
        warning, scale``) plus ``pareto_k_max``, ``n_bad_k`` (interactions with ``k`` above
        :func:`pareto_k_threshold`), ``k_threshold`` and ``loo_valid`` (no bad ``k``).
        ArviZ's warnings are logged, not raised.
    """
    import arviz as az

    models = _check_models(models)
    loos = {}
    diag = {}
    for name, idata in models.items():
        if any(v in idata.log_likelihood for v in _HELDOUT_VARS):
            raise DataValidationError(
                f"models[{name!r}] holds a held-out log-likelihood; PSIS-LOO needs the training "
                "one (build it without test=) -- use compare_heldout for held-out data"
            )
        var = next((v for v in _TRAIN_VARS if v in idata.log_likelihood), None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loo = az.loo(idata, pointwise=True, var_name=var)
        for w in caught:
            logger.info("arviz.loo(%s): %s", name, str(w.message).splitlines()[0])
        k = np.asarray(loo.pareto_k).ravel()
        S = int(idata.log_likelihood.sizes["chain"] * idata.log_likelihood.sizes["draw"])
        thr = pareto_k_threshold(S)
        diag[name] = {
            "pareto_k_max": float(k.max()),
            "n_bad_k": int((k > thr).sum()),
            "k_threshold": thr,
            "loo_valid": bool((k <= thr).all()),
        }
        loos[name] = loo
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = az.compare(loos, ic="loo", method=method)
    for w in caught:
        logger.info("arviz.compare: %s", str(w.message).splitlines()[0])
    table.index.name = "model"
    extra = pd.DataFrame.from_dict(diag, orient="index")
    return table.join(extra)


def compare_models(
    models: Mapping[str, Any], *, criterion: str = "auto", allow_invalid_loo: bool = False
) -> pd.DataFrame:
    """Compare models by held-out ELPD or, without held-out data, by PSIS-LOO.

    Parameters
    ----------
    models : mapping name -> arviz.InferenceData
    criterion : {"auto", "heldout", "loo"}
        ``"auto"``: held-out when every model has a held-out log-likelihood, else LOO.
    allow_invalid_loo : bool, default False
        Return a PSIS-LOO comparison even when some model's Pareto ``k`` diagnostics say
        it is unreliable (``loo_valid`` is then False for it); by default that raises.

    Returns
    -------
    DataFrame
        :func:`compare_heldout` or :func:`compare_loo`, with a ``criterion`` column.

    Raises
    ------
    DataValidationError
        PSIS-LOO is unreliable for some model (and ``allow_invalid_loo`` is False); the
        message names the models and suggests a held-out split.
    """
    models = _check_models(models)
    if criterion not in ("auto", "heldout", "loo"):
        raise DataValidationError(
            f"criterion must be 'auto', 'heldout' or 'loo'; got {criterion!r}"
        )
    if criterion == "auto":
        has = [any(v in m.log_likelihood for v in _HELDOUT_VARS) for m in models.values()]
        criterion = "heldout" if all(has) else "loo"
    if criterion == "heldout":
        return compare_heldout(models).assign(criterion="heldout")
    table = compare_loo(models)
    bad = table.index[~table["loo_valid"]].tolist()
    if bad and not allow_invalid_loo:
        raise DataValidationError(
            f"PSIS-LOO is unreliable for {bad}: some Pareto k exceed "
            f"{float(table['k_threshold'].iloc[0]):.2f} (max "
            f"{float(table['pareto_k_max'].max()):.2f}); compare on a held-out split "
            "(to_inference_data(..., test=...)) or pass allow_invalid_loo=True"
        )
    return table.assign(criterion="loo")


def choose_n_personas(
    train: Any,
    validation: Any,
    candidates: Sequence[int] = (1, 2, 3, 4),
    *,
    num_samples: int = 100,
    rule: str = "one_se",
    se_factor: float = 1.0,
    users: Any = None,
    return_models: bool = False,
    **model_kwargs: Any,
) -> tuple[int, pd.DataFrame] | tuple[int, pd.DataFrame, dict[int, Any]]:
    """Choose the number of personas K by held-out ELPD on a validation split.

    Fits a :class:`~bayes_persona.PersonaRecommender` for each candidate K on ``train``,
    scores ``validation`` with :func:`compare_heldout` and picks K.

    Parameters
    ----------
    train, validation : DataFrame or Dataset
        A split of the data, e.g. from :func:`bayes_persona.random_holdout` (the
        validation set is not used for early stopping, so that it stays held out).
    candidates : sequence of int
        Distinct K values to try.
    num_samples : int, default 100
        Posterior draws behind the ELPD.
    rule : {"one_se", "best"}
        ``"best"``: the highest ELPD. ``"one_se"`` (default): the smallest K whose ELPD is
        within ``se_factor`` paired standard errors (``dse``) of the best, preferring the
        simpler model when the data cannot tell them apart.
    se_factor : float, default 1.0
    users : sequence of user ids, optional
        Score only these users' validation interactions (default: all).
    return_models : bool, default False
        Also return the fitted models, keyed by K.
    **model_kwargs
        Further :class:`~bayes_persona.PersonaRecommender` arguments (``n_factors``,
        ``max_epochs``, ...); ``n_personas`` is set per candidate.

    Returns
    -------
    k : int
        The chosen K.
    table : DataFrame
        :func:`compare_heldout`'s table indexed by K (``model`` index holds ints), with
        a boolean ``chosen`` column.
    models : dict, only with ``return_models``
    """
    from bayes_persona.diagnostics.inference_data import to_inference_data
    from bayes_persona.persona.estimator import PersonaRecommender

    if isinstance(candidates, (int, np.integer)) or isinstance(candidates, str):
        raise DataTypeError(f"candidates must be a sequence of ints; got {candidates!r}")
    cand = list(candidates)
    if not cand or any(
        isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in cand
    ):
        raise DataValidationError(
            f"candidates must be a non-empty sequence of ints >= 1; got {candidates!r}"
        )
    if len(set(cand)) != len(cand):
        raise DataValidationError(f"candidates must be distinct; got {candidates!r}")
    if rule not in ("one_se", "best"):
        raise DataValidationError(f"rule must be 'one_se' or 'best'; got {rule!r}")
    if isinstance(se_factor, bool) or not isinstance(se_factor, (int, float)) or not se_factor >= 0:
        raise DataValidationError(f"se_factor must be a non-negative float; got {se_factor!r}")
    if "n_personas" in model_kwargs:
        raise DataValidationError("n_personas is set by candidates; do not pass it in model_kwargs")
    model_kwargs.setdefault("progress", False)
    fitted, idatas = {}, {}
    for k in cand:
        model = PersonaRecommender(n_personas=int(k), **model_kwargs).fit(train)
        fitted[int(k)] = model
        idatas[int(k)] = to_inference_data(model, num_samples, users=users, test=validation)
        logger.info("choose_n_personas: K=%d fitted", k)
    table = compare_heldout(idatas)
    table.index = table.index.astype(int)
    table.index.name = "n_personas"
    if rule == "best":
        chosen = int(table.index[0])
    else:
        ok = table[table["elpd_diff"] <= se_factor * table["dse"].fillna(0.0)]
        chosen = int(min(ok.index))
    table["chosen"] = table.index == chosen
    logger.info("choose_n_personas: K=%d (%s)", chosen, rule)
    if return_models:
        return chosen, table, fitted
    return chosen, table
