"""``PersonaRecommender``: the user-facing estimator around the Bayesian multi-persona model.

It follows scikit-learn's conventions: ``__init__`` stores its arguments, ``fit`` validates
the data and returns ``self``, fitted state ends in ``_``, and ``random_state`` becomes a
generator inside ``fit``. External ids stay external: a :class:`~bayes_persona.data.Vocabulary`
maps them to the model's indices, and every output is a tidy DataFrame of original ids.

Posterior summaries use ``n_draws`` draws from the guide with *common random numbers*: a
user's draws come from a generator seeded by ``(random_state, user index)`` and the items'
from one seeded by ``random_state``, so a user's recommendations and intervals do not depend
on which other users are in the same call (batch and single-user calls are identical).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_persona.baselines._base import torch_threads
from bayes_persona.data._validation import as_id_list as _as_id_list
from bayes_persona.data._validation import check_min_int as _check_int
from bayes_persona.exceptions import (
    ConvergenceWarning,
    DataTypeError,
    DataValidationError,
    ModelFitError,
    NotFittedError,
    SaveFormatError,
)
from bayes_persona.persona import explanations, fitting, predictions
from bayes_persona.persona.persistence import check_key as _check_key
from bayes_persona.persona.persistence import (
    model_payload,
    read_model_file,
    restore_fitted_state,
    write_model_file,
)
from bayes_persona.persona.posterior import PersonaPosterior

__all__ = ["PersonaRecommender"]

logger = logging.getLogger(__name__)


class PersonaRecommender:
    """Explainable recommender with a Bayesian attentive multi-persona model of taste.

    Each user has ``n_personas`` latent persona vectors and a Dirichlet-distributed
    prevalence over them; which persona explains an interaction is a latent assignment
    whose posterior is the candidate-dependent attention of AMP-CF [1]_. The posterior is
    approximated by stochastic variational inference [2]_ (the generative story:
    :mod:`bayes_persona.persona.model`).

    Parameters
    ----------
    n_personas : int, default 8
        K, personas per user; ``1`` is Bayesian matrix factorisation. With the sparse
        Dirichlet prior on the prevalences (``prevalence_concentration``) a user keeps only
        the personas the data need, so K is an upper bound rather than a count.
    n_factors : int, default 16
        D, dimension of persona and item vectors; at most ``max(n_items, 64)`` of the
        training data (checked by ``fit``).
    feedback : {"implicit", "explicit"}, default "implicit"
        Implicit: every row is a choice, softmax likelihood. Explicit: ratings, Normal
        likelihood (needs a ``rating`` column).
    guide : {"meanfield", "lowrank"}, default "meanfield"
        Variational family; ``"lowrank"`` correlates each user's persona block.
    likelihood : {"joint", "mixture"}, default "joint"
        Implicit feedback only. ``"joint"``: the user picks persona and item together,
        ``p(z=k, i | u) ~ pi_uk exp(p_uk . q_i + b_i)``, so the explanation
        ``P(z=k | u, i) = softmax_k(log pi_uk + p_uk . q_i)`` is AMP-CF's attention with the
        prevalence as its prior. ``"mixture"``: a mixture of per-persona softmaxes with the
        prevalence on the personas' shares (see :mod:`bayes_persona.persona.model`).
    prevalence_concentration : float in (0, 1e6], default 0.5
        Dirichlet concentration of persona prevalences (< 1 is sparse); chosen on validation
        data (shared accounts seed 1 and the ranking split; paper sections 4 and 5.0).
    n_prototypes : int, default 8
        Taste prototypes of the persona prior (a Gaussian mixture fitted by empirical
        Bayes); 0 gives an isotropic Normal prior.
    item_prior_scale : float or None, default 2.0
        Fixed prior scale of item factors; ``None`` fits it by empirical Bayes.
    persona_prior_scale, bias_prior_scale : float or None, default None
        Fixed prior scales of the persona factors and of the item biases; ``None`` (the
        default) fits each by empirical Bayes. Simulation-based calibration fixes them at
        the simulated values (:mod:`bayes_persona.diagnostics.sbc`).
    n_negatives : int or None, default None
        Items sampled for the softmax normaliser; ``None`` uses the whole catalogue when it
        has at most 20,000 items, else 2,048 samples.
    batch_size : int, default 512 (users per SVI step; chosen on validation data)
    max_items_per_user : int, default 128
        Interactions of a user per step (subsampled and reweighted beyond this).
    user_particles : int, default 1
        Draws of each user's personas and prevalence per SVI step. Above 1 the fit maximises
        a per-user importance-weighted bound (:mod:`bayes_persona.svi.importance`) instead of
        the ELBO: a tighter bound, whose guide is trained as a proposal for each user's
        posterior rather than as its mode-seeking fit; a step costs about ``user_particles``
        times as much. Implicit feedback only.
    learning_rate : float, default 0.02
    max_epochs : int, default 150
        An epoch is ``ceil(n_users / batch_size)`` steps.
    patience : int, default 0
        Epochs without improvement before stopping; 0 (the default) runs ``max_epochs``
        (on ML-100K, ranking on validation improves after the ELBO levels off). An epoch
        improves when the ELBO of the last 5 epochs beats the 5 before by two standard
        errors (with ``validation``: when the held-out log-likelihood rises). A fit ending
        with its ELBO still rising warns (``ConvergenceWarning``; ``converged_ = False``).
    init_scale : float in (0, 10], default 0.05
        Initial standard deviation of the guide.
    n_draws : int in [2, 100000], default 100
        Posterior draws behind scores, explanations and intervals.
    hdi_prob : float in (0, 1), default 0.9
        Mass of the credible intervals that ``recommend``, ``explain`` and ``personas``
        report (each point is a posterior median, inside its interval).
    random_state : int in [0, 2**63 - 1], default 0
    progress : bool, default True
        Show a progress bar while fitting.
    device : str, default "cpu"
    n_threads : int or None, default 1
        Torch CPU threads while fitting, restored afterwards; ``None`` keeps torch's
        setting. One thread makes CPU results reproducible.

    Attributes
    ----------
    user_vocab_, item_vocab_ : Vocabulary
        External ids <-> indices.
    model_, guide_ : torch.nn.Module
        The fitted model (empirical-Bayes hyperparameters) and guide (posterior).
    elbo_ : numpy.ndarray
        ELBO of every SVI step (with ``user_particles`` above 1, the importance-weighted
        bound that the fit maximises).
    validation_ : list of (step, score)
        Held-out log-likelihood per epoch when ``fit`` got a validation set.
    n_steps_ : int
    converged_ : bool
        False when the fit stopped at ``max_epochs`` while its objective still improved.

    References
    ----------
    .. [1] O. Barkan, Y. Fuchs, A. Caciularu, N. Koenigstein. "Explainable Recommendations
       via Attentive Multi-Persona Collaborative Filtering". RecSys 2020.
    .. [2] M. D. Hoffman, D. M. Blei, C. Wang, J. Paisley. "Stochastic Variational
       Inference". JMLR 14, 2013.

    Examples
    --------
    >>> import bayes_persona as bp
    >>> data, truth = bp.make_synthetic(n_users=60, n_items=120, n_tastes=4, seed=0)
    >>> model = bp.PersonaRecommender(n_personas=3, n_factors=8, max_epochs=5, progress=False)
    >>> model.fit(data).recommend([1], n=3).shape[0]
    3
    """

    def __init__(
        self,
        n_personas: int = 8,
        n_factors: int = 16,
        feedback: str = "implicit",
        *,
        guide: str = "meanfield",
        likelihood: str = "joint",
        prevalence_concentration: float = 0.5,
        n_prototypes: int = 8,
        item_prior_scale: float | None = 2.0,
        persona_prior_scale: float | None = None,
        bias_prior_scale: float | None = None,
        n_negatives: int | None = None,
        batch_size: int = 512,
        max_items_per_user: int = 128,
        user_particles: int = 1,
        learning_rate: float = 0.02,
        max_epochs: int = 150,
        patience: int = 0,
        init_scale: float = 0.05,
        n_draws: int = 100,
        hdi_prob: float = 0.9,
        random_state: int = 0,
        progress: bool = True,
        device: str = "cpu",
        n_threads: int | None = 1,
    ) -> None:
        self.n_personas = n_personas
        self.n_factors = n_factors
        self.feedback = feedback
        self.guide = guide
        self.likelihood = likelihood
        self.prevalence_concentration = prevalence_concentration
        self.n_prototypes = n_prototypes
        self.item_prior_scale = item_prior_scale
        self.persona_prior_scale = persona_prior_scale
        self.bias_prior_scale = bias_prior_scale
        self.n_negatives = n_negatives
        self.batch_size = batch_size
        self.max_items_per_user = max_items_per_user
        self.user_particles = user_particles
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.patience = patience
        self.init_scale = init_scale
        self.n_draws = n_draws
        self.hdi_prob = hdi_prob
        self.random_state = random_state
        self.progress = progress
        self.device = device
        self.n_threads = n_threads

    # ------------------------------------------------------------------ params
    _PARAMS = (
        "n_personas", "n_factors", "feedback", "guide", "likelihood", "prevalence_concentration",
        "n_prototypes", "item_prior_scale", "persona_prior_scale", "bias_prior_scale", "n_negatives", "batch_size", "max_items_per_user",
        "user_particles", "learning_rate", "max_epochs",
        "patience", "init_scale", "n_draws", "hdi_prob", "random_state", "progress", "device", "n_threads",
    )  # fmt: skip

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as scikit-learn's ``get_params``."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params: Any) -> PersonaRecommender:
        """Set constructor arguments; unknown names raise ``ValueError``."""
        for k, v in params.items():
            if k not in self._PARAMS:
                raise DataValidationError(f"unknown parameter {k!r}; valid: {', '.join(self._PARAMS)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        state = "fitted" if hasattr(self, "guide_") else "not fitted"
        return (
            f"PersonaRecommender(n_personas={self.n_personas}, n_factors={self.n_factors}, "
            f"feedback={self.feedback!r}; {state})"
        )

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train: Any,
        items: pd.DataFrame | None = None,
        validation: Any = None,
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 100,
        resume: bool = False,
        catalogue: Any = None,
        sample_weight: Any = None,
    ) -> PersonaRecommender:
        """Fit the posterior by SVI.

        Parameters
        ----------
        train : DataFrame or Dataset
            Interactions ``user_id``, ``item_id`` (and ``rating`` for explicit feedback).
            Implicit feedback takes every row as a positive (binarise first with
            :func:`bayes_persona.binarize` if needed). A Dataset's items table is used
            when ``items`` is not given.
        items : DataFrame, optional
            ``item_id`` and ``categories`` (list of str), used to describe personas.
        validation : DataFrame or Dataset, optional
            Held-out interactions; early stopping then follows their log-likelihood and the
            best parameters are kept. Rows with unknown users or items are ignored.
        checkpoint_dir : path, optional
            Save a checkpoint there every ``checkpoint_every`` steps (atomically).
        resume : bool
            Continue from the checkpoint in ``checkpoint_dir`` when there is one.
        catalogue : array-like of item ids, optional
            The whole catalogue the choices were made from. Its items that ``train`` never
            chose still enter the softmax normaliser (their factors are learnt from having
            been passed over) and can be recommended. Default: the items of ``train``.
        sample_weight : array-like of float, shape (n_rows,), optional
            Implicit feedback only: how many choices each row of ``train`` stands for, e.g.
            how often the user chose the item (a data set holds each pair once). A row of
            weight ``c`` enters the likelihood as ``c`` independent choices of its item,
            ``p(i | u) ** c``; fractional weights scale it alike. Default: one each.

        Returns
        -------
        self

        Notes
        -----
        Inside an initialised ``torch.distributed`` process group with several workers
        (e.g. under ``torchrun``), the fit is data-parallel: every worker must call ``fit``
        with the same settings and data; each draws its minibatches from its own shard of
        the users, gradients are averaged and only rank 0 writes checkpoints (see
        :mod:`bayes_persona.svi.distributed` and :func:`~bayes_persona.svi.distributed.fit_distributed`).
        """
        fitting.check_settings(self)
        on_cpu = not str(self.device).startswith("cuda")
        with torch_threads(self.n_threads if on_cpu else None):
            return self._fit(train, items, validation, checkpoint_dir, checkpoint_every, resume, catalogue, sample_weight)

    def _fit(self, train, items, validation, checkpoint_dir, checkpoint_every, resume, catalogue=None,
             sample_weight=None) -> PersonaRecommender:  # fmt: skip
        data = fitting.training_data(self, train, items, validation, catalogue, sample_weight)  # the model is untouched
        checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
        # From here on the fitted state is rebuilt: a refit that fails part-way leaves an
        # unfitted model (NotFittedError), never old vocabularies or cached draws mixed with
        # a new guide. (A ModelFitError keeps the new model at its last good state.)
        for attr in ("guide_", "_cache"):
            self.__dict__.pop(attr, None)
        self.user_vocab_, self.item_vocab_, self.seen_ = data.user_vocab, data.item_vocab, data.seen
        self.item_categories_, self.item_titles_ = data.item_categories, data.item_titles
        self.n_negatives_ = data.n_negatives

        def built(model: Any, guide: Any) -> None:
            self.model_, self.guide_ = model, guide

        try:
            state = fitting.fit_state(self, data, checkpoint_dir, checkpoint_every, resume, built)
        except BaseException:
            self.__dict__.pop("guide_", None)  # e.g. a refused checkpoint or an interrupt: not fitted
            raise
        result = state.result
        self.elbo_ = np.asarray(result.elbo)
        self.validation_ = result.validation
        self.n_steps_ = result.steps
        self.stopped_early_ = result.stopped_early
        self.converged_ = bool((result.stopped_early or not result.still_improving) and not result.fell_from_best)
        self._cache: dict[str, Any] = {}
        if state.failure is not None:
            raise state.failure
        message = fitting.convergence_message(self, result)
        if message is not None:  # converged_ is False
            warnings.warn(message, ConvergenceWarning, stacklevel=3)
        logger.info("fit %d steps; final epoch ELBO %.4g", result.steps, self.elbo_[-state.steps_per_epoch :].mean())
        if self.feedback == "implicit" and self.posterior_.closed_form:  # users' persona orders, once, if cheap
            self.posterior_.orders_at_fit(self.n_draws)
        return self

    persona_init_length = 3.0
    # A user (item) table gets lazy row-sparse updates when it has more than this many times
    # the rows a step touches (batch_size users, n_negatives sampled items) and at least
    # sparse_min_floats entries per parameter (smaller tables: dense Adam costs no more per
    # step and converges faster per epoch, e.g. on ML-100K).
    sparse_update_ratio = 8
    sparse_min_floats = 2**19

    # ------------------------------------------------------------------ internals
    def _check_fitted(self) -> None:
        if not hasattr(self, "guide_"):
            raise NotFittedError(
                "this PersonaRecommender is not fitted yet; call fit(train) before using it"
            )
        cache = self.__dict__.setdefault("_cache", {})
        if "finite" not in cache:  # once per fitted state (the cache is reset by fit and load)
            tensors = list(self.model_.parameters()) + list(self.guide_.parameters())
            cache["finite"] = all(bool(torch.isfinite(t).all()) for t in tensors)
        if not cache["finite"]:
            raise ModelFitError(
                "this model's parameters are not all finite (left by a failed fit?); its "
                "scores would be meaningless. Refit it, e.g. with a smaller learning_rate"
            )

    @property
    def posterior_(self) -> PersonaPosterior:
        """The fitted posterior: draws of every quantity and of every explanation.

        Raises :class:`~bayes_persona.exceptions.NotFittedError` before ``fit`` (and
        :class:`~bayes_persona.exceptions.ModelFitError` on non-finite parameters). See
        :class:`~bayes_persona.persona.posterior.PersonaPosterior`.
        """
        self._check_fitted()
        return PersonaPosterior(self, self._cache)

    # ------------------------------------------------------------------ public API
    def score(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Posterior mean score of each pair ``(user_ids[j], item_ids[j])``.

        Implicit feedback: the probability that the user's next choice is the item. The
        default model gives ``W_ui / sum_j W_uj``, with the choice weights ``W`` averaged in
        closed form over the user's posterior at the items' posterior means
        (:meth:`PersonaPosterior.log_expected_weight`, what ``recommend`` ranks by); other
        forms, like :meth:`log_predictive`, the mean of ``P(i | u)`` over draws. Explicit:
        the expected rating.

        Parameters
        ----------
        user_ids, item_ids : sequence, same length n

        Returns
        -------
        numpy.ndarray, shape (n,)
        """
        return predictions.score(self, user_ids, item_ids)

    def log_predictive(self, data: Any) -> np.ndarray:
        """Pointwise log posterior predictive density of held-out interactions.

        For implicit feedback ``log E_theta[P(i | u, theta)]``, the probability that the
        user's choice is the item; for ratings ``log E_theta[p(r | u, i, theta)]``. The
        expectation is over ``n_draws`` posterior draws (log-mean-exp).

        Parameters
        ----------
        data : DataFrame or Dataset
            ``user_id``, ``item_id`` (and ``rating`` for explicit feedback); ids must be known.

        Returns
        -------
        numpy.ndarray, shape (n_rows,)
            In the row order of ``data``.
        """
        return predictions.log_predictive(self, data)

    def recommend(self, user_ids: Any, n: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``n`` items for each user, each with the persona that explains it.

        Parameters
        ----------
        user_ids : id or sequence of ids
        n : int
            Items per user (fewer when fewer unseen items remain).
        exclude_seen : bool
            Leave out the items the user has in the training data.

        Returns
        -------
        DataFrame
            ``user_id, rank, item_id, score, persona, persona_prob, persona_prob_low,
            persona_prob_high``: ``persona`` is the explaining persona (0 = the user's most
            prevalent, chosen by the largest posterior median), ``persona_prob`` the
            posterior median of ``P(z = persona | u, i)`` and the bounds its ``hdi_prob``
            highest-density interval, which always holds the median
            (:func:`bayes_persona.posterior.summarise`).
        """
        return predictions.recommend(self, user_ids, n, exclude_seen)

    def titles(self, item_ids: Any) -> list[str]:
        """Titles of known items (the id as text where the items table gave none).

        Titles come from the ``title`` column of the items table given to :meth:`fit`
        (MovieLens loaders provide it); ``recommend``, ``explain`` and ``personas`` then
        carry them too.
        """
        self._check_fitted()
        return explanations.titles_of(self, self.item_vocab_.encode(_as_id_list(item_ids, "item_ids")))

    def explain(self, user_id: Any, item_ids: Any, hdi_prob: float | None = None) -> pd.DataFrame:
        """Which persona explains each item, with credible intervals.

        Parameters
        ----------
        user_id : id
        item_ids : id or sequence of ids (known items)
        hdi_prob : float in (0, 1), optional
            Mass of the highest-density intervals; default the model's ``hdi_prob``.

        Returns
        -------
        DataFrame
            One row per (item, persona): ``user_id, item_id, persona, prevalence, prob,
            persona_prob_low, persona_prob_high`` (the names ``recommend`` uses).
            ``persona_prob`` is the posterior median of ``P(z = persona | u, i)`` and
            ``persona_prob_low, persona_prob_high`` its highest-density
            interval (:func:`bayes_persona.posterior.summarise`: the median always lies
            inside); ``prevalence`` is the posterior median of the persona's share.
            :meth:`explain_draws` gives the draws behind them (for means or other summaries).
        """
        self._check_fitted()
        return explanations.explain(self, user_id, item_ids, hdi_prob)

    def explain_draws(self, user_id: Any, item_ids: Any, n_draws: int | None = None) -> np.ndarray:
        """Posterior draws of every explanation ``P(z = k | u, i)``.

        The draws behind :meth:`explain`: with them a caller can summarise any function of
        the explanation, for example ``P(z in A | u, i)`` for a set ``A`` of personas (sum
        the rows of ``A``) with its own interval.

        Parameters
        ----------
        user_id : id
        item_ids : id or sequence of ids, length n (known items)
        n_draws : int, optional
            Number of posterior draws; default the model's ``n_draws`` (then the draws are
            exactly those :meth:`explain` summarises).

        Returns
        -------
        numpy.ndarray, shape (n_draws, K, n)
            Personas in :meth:`explain`'s order (0 = the user's most prevalent); each
            column sums to one over the persona axis.
        """
        self._check_fitted()
        return explanations.explain_draws(self, user_id, item_ids, n_draws)

    def attribute(self, user_id: Any, labels: Any, item_ids: Any, hdi_prob: float | None = None) -> pd.DataFrame:
        """Who of the people sharing an account chose each item, with credible intervals.

        Parameters
        ----------
        user_id : id
        labels : dict or Series, item id -> label
            Items of the account whose chooser is known, and who chose them.
        item_ids : id or sequence of ids (known items)
        hdi_prob : float in (0, 1), optional

        Returns
        -------
        DataFrame
            One row per (item, label): ``user_id, item_id, label, prob_mean`` (the posterior
            probability that the label chose the item), and ``prob`` (the median) inside
            ``prob_low, prob_high``; :func:`~bayes_persona.persona.explanations.attribution_draws`.
        """
        self._check_fitted()
        return explanations.attribute(self, user_id, labels, item_ids, hdi_prob)

    def persona_probabilities(self, user_ids: Any, item_ids: Any, hdi_prob: float | None = None) -> pd.DataFrame:
        """:meth:`explain` for many pairs ``(user_ids[j], item_ids[j])`` at once (tidy)."""
        self._check_fitted()
        return explanations.persona_probabilities(self, user_ids, item_ids, hdi_prob)

    def personas(self, user_ids: Any, n_items: int = 5, hdi_prob: float | None = None) -> pd.DataFrame:
        """Describe the personas of one user or several.

        Parameters
        ----------
        user_ids : id or sequence of ids
        n_items : int
            Items listed per persona.
        hdi_prob : float in (0, 1), optional
            Mass of the prevalence intervals; default the model's ``hdi_prob``.

        Returns
        -------
        DataFrame
            One row per (user, persona), users in the order given, personas from the most
            prevalent (0): ``user_id, persona, prevalence, prevalence_low, prevalence_high``
            (posterior median and highest-density interval, as in :meth:`explain`),
            ``active`` (median prevalence above :data:`ACTIVE_PREVALENCE`; the others are
            the "unused" personas everywhere in the library), ``share`` (expected share of
            the user's training interactions it explains), ``top_items`` (the persona's most
            probable unseen items), ``top_categories`` (categories of the training items it
            explains, weighted by its probability; empty when items carry no categories),
            and ``top_titles`` when the model knows item titles.
        """
        self._check_fitted()
        return explanations.personas(self, user_ids, n_items, hdi_prob)

    def importance_diagnostics(self, user_ids: Any = None) -> pd.DataFrame:
        """Can each user's posterior draws be trusted? Pareto-smoothed importance sampling.

        Reweights each user's guide draws towards the exact posterior of their personas and
        prevalence (given the item draws) and reports the Pareto shape ``k_hat`` of the
        weights [1]_ [2]_: above 0.7 the user's intervals are not to be trusted. Implicit
        feedback only (:meth:`~bayes_persona.persona.posterior.PersonaPosterior.importance_weights`).

        Parameters
        ----------
        user_ids : id or sequence of ids, optional
            Default: every training user.

        Returns
        -------
        DataFrame
            ``user_id, k_hat, ess, reliable``: ``ess`` is the effective sample size of the
            smoothed weights (out of ``n_draws``), ``reliable`` is ``k_hat < 0.7``.

        References
        ----------
        .. [1] A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. "Pareto Smoothed
           Importance Sampling". JMLR 25(72), 2024.
        .. [2] Y. Yao, A. Vehtari, D. Simpson, A. Gelman. "Yes, but Did It Work?: Evaluating
           Variational Inference". ICML 2018.
        """
        self._check_fitted()
        return explanations.importance_diagnostics(self, user_ids)

    def summary(self, users: Any = None):
        """Fit health and each user's personas at a glance.

        Parameters
        ----------
        users : sequence of ids, optional
            Default: every training user.

        Returns
        -------
        ModelSummary
            ``fit`` (data size, steps, epochs, ``converged``, final ELBO, last validation score)
            and ``personas`` (per user: active personas, median prevalences); text or HTML.
        """
        from bayes_persona.persona.summary import summarise_model

        return summarise_model(self, users)

    def to_inference_data(self, num_samples: int = 100, users: Any = None, items: Any = None, test: Any = None, **kwargs: Any):
        """Posterior, replicated data and pointwise log-likelihood as ``arviz.InferenceData``.

        Dims ``user``, ``item``, ``persona``, ``factor`` carry the original ids. The
        posterior group holds variational draws (one chain): R-hat and ESS do not apply.
        See :func:`bayes_persona.diagnostics.inference_data.to_inference_data` for the arguments.
        """
        from bayes_persona.diagnostics.inference_data import to_inference_data

        return to_inference_data(self, num_samples=num_samples, users=users, items=items, test=test, **kwargs)

    def explanation_inference_data(self, users: Any, items: Any = None):
        """The prevalences and explanation probabilities of ``users`` as a compact
        ``arviz.InferenceData`` (see
        :func:`bayes_persona.diagnostics.inference_data.explanation_inference_data`); ``az.summary`` of
        it has one row per (user, persona) and per (pair, persona)."""
        from bayes_persona.diagnostics.inference_data import explanation_inference_data

        return explanation_inference_data(self, users, items)

    def posterior_predictive_checks(self, num_samples: int = 100, users: Any = None, test: Any = None) -> pd.DataFrame:
        """Run every posterior predictive check (:mod:`bayes_persona.diagnostics.ppc`); tidy frame."""
        from bayes_persona.diagnostics.ppc import posterior_predictive_checks

        return posterior_predictive_checks(self.to_inference_data(num_samples=num_samples, users=users, test=test))

    def sample_posterior(self, num_samples: int = 100, users: Any = None) -> dict[str, np.ndarray]:
        """Draws from the fitted posterior (the guide).

        Parameters
        ----------
        num_samples : int
        users : sequence of user ids, optional
            Restrict the user-level draws to these users (default: all users).

        Returns
        -------
        dict of numpy arrays
            ``item_factors`` (S, N, D), ``item_bias`` (S, N), ``persona_factors`` (S, U, K, D),
            ``prevalence`` (S, U, K) and, for ratings, ``user_bias`` (S, U); personas ordered by
            median prevalence; rows follow ``item_vocab_`` and the users (or ``user_vocab_``).
        """
        return predictions.sample_posterior(self, num_samples, users)

    def fold_in(self, history: Any, n_steps: int = 200, **kwargs: Any) -> PersonaRecommender:
        """Infer new users' personas from their histories, the items held fixed.

        Returns a **new** model that knows the new users only and shares this model's
        item parameters; this model is not changed. ``history`` has ``user_id``,
        ``item_id`` (and ``rating``); unknown items raise ``UnknownIdError``, users this
        model already knows raise ``DataValidationError``. Other keyword arguments
        (``learning_rate``, ``random_state``, ``progress``, ``sample_weight``: how many
        choices each row stands for, as in :meth:`fit`; ``start``: where to start chosen
        users' personas and prevalences) and the design are described in
        :func:`bayes_persona.persona.foldin.fold_in`.

        Examples
        --------
        >>> new = model.fold_in(new_user_history)  # doctest: +SKIP
        >>> new.recommend([new_user_id], n=10)  # doctest: +SKIP
        """
        from bayes_persona.persona.foldin import fold_in

        return fold_in(self, history, n_steps=n_steps, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, key: bytes | str | None = None) -> None:
        """Save the fitted model to one file, atomically (temp file, fsync, rename).

        The format is versioned: tensors plus JSON metadata in a ``torch.save`` container
        that :meth:`load` reads with ``weights_only=True`` (no arbitrary unpickling).

        Parameters
        ----------
        path : path-like
        key : bytes or str, optional
            A secret key. The file then also carries an HMAC-SHA256 of its contents under
            that key, which ``load(path, key=key)`` verifies.

        Notes
        -----
        Every file carries an unkeyed sha256 of its contents. It detects truncation and
        accidental damage, not tampering: whoever can edit the file can recompute it. (The
        loader also re-validates the configuration and arrays, so an edited file cannot
        smuggle in out-of-range values.) Against deliberate edits, or a ``model.pt`` swapped
        in from another run, save and load with a ``key`` kept apart from the file.
        """
        self._check_fitted()
        _check_key(key)
        write_model_file(path, *model_payload(self), key)
        logger.info("saved model to %s", path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, key: bytes | str | None = None) -> PersonaRecommender:
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        path : path-like
        key : bytes or str, optional
            The key the file was saved with: its HMAC must match, or the load is refused.
            Without a key only the unkeyed sha256 is checked (see :meth:`save`).

        Raises
        ------
        SaveFormatError
            The file is truncated, damaged, edited (its checksum or, with ``key``, its HMAC
            does not match), not a bayes_persona model, of an unsupported format version, or
            holds out-of-range values.
        FileNotFoundError
            ``path`` does not exist.
        """
        meta, tensors = read_model_file(path, key)
        path = Path(path)
        cfg = dict(meta["config"])
        cfg["device"] = "cpu"
        cfg.pop("progress", None)
        unknown = sorted(set(cfg) - set(cls._PARAMS))
        if unknown:
            raise SaveFormatError(f"{path}: its config has unknown settings {unknown}")
        self = cls(**cfg, progress=False)
        try:  # a file is input like any other: its settings get fit's checks
            fitting.check_settings(self)
        except (DataValidationError, DataTypeError) as exc:
            raise SaveFormatError(f"{path}: its config is not valid: {exc}") from exc
        restore_fitted_state(self, meta, tensors, path)
        return self


