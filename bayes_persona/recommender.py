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

import hashlib
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_persona import explanations
from bayes_persona.baselines._base import torch_threads
from bayes_persona.data._validation import as_id_list as _as_id_list
from bayes_persona.data._validation import check_min_int as _check_int
from bayes_persona.data._validation import (
    check_positive_float,
    id_kind_of_values,
    interactions_frame,
    validate_items,
    validate_ratings,
)
from bayes_persona.data._validation import check_prob as _check_prob
from bayes_persona.data.preprocessing import Vocabulary
from bayes_persona.exceptions import (
    ConvergenceWarning,
    DataTypeError,
    DataValidationError,
    ModelFitError,
    NotFittedError,
    SaveFormatError,
)
from bayes_persona.explanations import top_n
from bayes_persona.inference import SVIConfig, SVIResult, run_svi
from bayes_persona.initialization import (
    kmeans,
    prevalence_from_shares,
    seed_personas,
    spectral_item_factors,
)
from bayes_persona.interactions import InteractionMatrix
from bayes_persona.model import (
    Batch,
    PersonaModel,
    log_softmax_normaliser,
    make_guide,
    persona_shares,
)
from bayes_persona.persistence import check_key as _check_key
from bayes_persona.persistence import read_model_file, write_model_file
from bayes_persona.persona_posterior import CHUNK_FLOATS as _CHUNK_FLOATS
from bayes_persona.persona_posterior import PersonaPosterior
from bayes_persona.posterior import summarise

__all__ = ["PersonaRecommender"]

logger = logging.getLogger(__name__)


# Documented upper bounds of numeric parameters (beyond them a fit overflows or stalls).
MAX_DRAWS = 100_000
MAX_SEED = 2**63 - 1
MAX_INIT_SCALE = 10.0
MIN_FACTOR_CAP = 64  # n_factors may reach max(n_items, this)
#: Pareto k below which importance-reweighted draws are reliable (Vehtari et al. 2024).
PSIS_K_THRESHOLD = 0.7


def _as_ratings(data: Any, name: str) -> pd.DataFrame:
    """Accept a Dataset (anything with ``.ratings``) or a ratings DataFrame."""
    return validate_ratings(interactions_frame(data, name), frame=name)


def _distributed() -> bool:
    """A torch.distributed process group with several workers is up: fit data-parallel."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class PersonaRecommender:
    """Explainable recommender with a Bayesian attentive multi-persona model of taste.

    Each user has ``n_personas`` latent persona vectors and a Dirichlet-distributed
    prevalence over them; which persona explains an interaction is a latent assignment
    whose posterior is the candidate-dependent attention of AMP-CF [1]_. The posterior is
    approximated by stochastic variational inference [2]_ (see :mod:`bayes_persona.model`
    for the generative story).

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
        prevalence on the personas' shares (see :mod:`bayes_persona.model`).
    prevalence_concentration : float, default 0.1
        Dirichlet concentration of persona prevalences (< 1 is sparse).
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
    batch_size : int, default 128
        Users per SVI step.
    max_items_per_user : int, default 128
        Interactions of a user per step (subsampled and reweighted beyond this).
    learning_rate : float, default 0.02
    max_epochs : int, default 150
        An epoch is ``ceil(n_users / batch_size)`` steps.
    patience : int, default 0
        Epochs without improvement before stopping; 0 (the default) runs ``max_epochs``.
        Without ``validation`` an epoch improves when the ELBO of the last 5 epochs beats
        the 5 before by more than two standard errors (minibatch noise does not drive the
        rule); with it, when the held-out log-likelihood rises. A fit that reaches
        ``max_epochs`` with its ELBO still rising by that test warns
        (:class:`~bayes_persona.exceptions.ConvergenceWarning`) and sets
        ``converged_ = False``. (On ML-100K the ELBO levels off, by that test, after about
        50 epochs, but ranking on a validation split cut from train still improves: NDCG@10
        0.208 with ``patience=20`` against 0.217 after 300 epochs; so the default is a
        fixed budget.)
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
        setting. One thread is the fastest for this model's small kernels on a shared
        machine (about 6 steps/s against 1 on a busy 2-core machine with torch's default)
        and makes CPU results reproducible.

    Attributes
    ----------
    user_vocab_, item_vocab_ : Vocabulary
        External ids <-> indices.
    model_, guide_ : torch.nn.Module
        The fitted model (empirical-Bayes hyperparameters) and guide (posterior).
    elbo_ : numpy.ndarray
        ELBO of every SVI step.
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
        prevalence_concentration: float = 0.1,
        n_prototypes: int = 8,
        item_prior_scale: float | None = 2.0,
        persona_prior_scale: float | None = None,
        bias_prior_scale: float | None = None,
        n_negatives: int | None = None,
        batch_size: int = 128,
        max_items_per_user: int = 128,
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
        "n_prototypes", "item_prior_scale", "persona_prior_scale", "bias_prior_scale", "n_negatives", "batch_size", "max_items_per_user", "learning_rate", "max_epochs",
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

    def _validate_params(self) -> None:
        _check_int("n_personas", self.n_personas, 1)
        _check_int("n_factors", self.n_factors, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("max_items_per_user", self.max_items_per_user, 1)
        _check_int("max_epochs", self.max_epochs, 1)
        _check_int("patience", self.patience, 0)
        _check_int("n_draws", self.n_draws, 2, MAX_DRAWS)
        _check_int("random_state", self.random_state, 0, MAX_SEED)
        _check_int("n_prototypes", self.n_prototypes, 0)
        if self.n_threads is not None:
            _check_int("n_threads", self.n_threads, 1)
        for name in ("item_prior_scale", "persona_prior_scale", "bias_prior_scale"):
            if getattr(self, name) is not None:
                check_positive_float(name, getattr(self, name))
        if self.n_negatives is not None:
            _check_int("n_negatives", self.n_negatives, 1)
        if self.feedback not in ("implicit", "explicit"):
            raise DataValidationError(f"feedback must be 'implicit' or 'explicit'; got {self.feedback!r}")
        if self.likelihood not in ("joint", "mixture"):
            raise DataValidationError(f"likelihood must be 'joint' or 'mixture'; got {self.likelihood!r}")
        if self.guide not in ("meanfield", "lowrank"):
            raise DataValidationError(f"guide must be 'meanfield' or 'lowrank'; got {self.guide!r}")
        for name in ("prevalence_concentration", "learning_rate"):
            check_positive_float(name, getattr(self, name))
        check_positive_float("init_scale", self.init_scale, MAX_INIT_SCALE)
        _check_prob("hdi_prob", self.hdi_prob)
        if self.device != "cpu" and not str(self.device).startswith("cuda"):
            raise DataValidationError(f"device must be 'cpu' or 'cuda[:N]'; got {self.device!r}")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise DataValidationError(f"device={self.device!r} but CUDA is not available here")

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

        Returns
        -------
        self

        Notes
        -----
        Inside an initialised ``torch.distributed`` process group with several workers
        (e.g. under ``torchrun``), the fit is data-parallel: every worker must call ``fit``
        with the same settings and data; each draws its minibatches from its own shard of
        the users, gradients are averaged and only rank 0 writes checkpoints (see
        :mod:`bayes_persona.distributed` and :func:`~bayes_persona.distributed.fit_distributed`).
        """
        self._validate_params()
        on_cpu = not str(self.device).startswith("cuda")
        with torch_threads(self.n_threads if on_cpu else None):
            return self._fit(train, items, validation, checkpoint_dir, checkpoint_every, resume, catalogue)

    def _fit(self, train, items, validation, checkpoint_dir, checkpoint_every, resume, catalogue=None) -> PersonaRecommender:
        ratings = _as_ratings(train, "train")
        item_ids = ratings["item_id"].to_numpy()
        if catalogue is not None:
            cat = Vocabulary.from_ids(catalogue, name="catalogue")
            train_kind = id_kind_of_values(item_ids, "column 'item_id' of train")
            if cat.kind != train_kind:
                raise DataTypeError(f"catalogue must hold {train_kind} item ids like train's; got {cat.kind} ids")
            item_ids = np.concatenate([item_ids.astype(cat.ids.dtype), cat.ids])
        if items is None and not isinstance(train, pd.DataFrame):
            items = getattr(train, "items", None)
        if items is not None:
            items = validate_items(items, frame="items")
        K = self.n_personas
        if self.feedback == "explicit" and "rating" not in ratings.columns:
            raise DataValidationError("feedback='explicit' needs a 'rating' column in train; it has none")
        if self.feedback == "implicit" and "rating" in ratings.columns and ratings["rating"].nunique() > 1:
            warnings.warn(
                "feedback='implicit' takes every row of train as a positive, and train has a "
                f"'rating' column with {ratings['rating'].nunique()} distinct values, which are "
                "ignored: low ratings count as choices too. Keep only the positives first, e.g. "
                "bp.binarize(data, 4.0)",
                UserWarning,
                stacklevel=3,
            )
        checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
        N = int(ratings["item_id"].nunique())
        if K > N:
            raise DataValidationError(f"n_personas={K} exceeds the number of items in train ({N})")
        if self.n_factors > max(N, MIN_FACTOR_CAP):
            raise DataValidationError(
                f"n_factors={self.n_factors} exceeds what train supports: at most "
                f"max(number of items, {MIN_FACTOR_CAP}) = {max(N, MIN_FACTOR_CAP)} dimensions "
                f"(train has {N} items)"
            )
        # From here on the fitted state is rebuilt: a refit that fails part-way leaves an
        # unfitted model (NotFittedError), never old vocabularies or cached draws mixed with
        # a new guide. (A ModelFitError keeps the new model at its last good state.)
        for attr in ("guide_", "_cache"):
            self.__dict__.pop(attr, None)

        self.user_vocab_ = Vocabulary.from_ids(ratings["user_id"].to_numpy(), name="user_id")
        self.item_vocab_ = Vocabulary.from_ids(item_ids, name="item_id")
        u = self.user_vocab_.encode(ratings["user_id"].to_numpy())
        i = self.item_vocab_.encode(ratings["item_id"].to_numpy())
        U, N = len(self.user_vocab_), len(self.item_vocab_)
        if self.feedback == "explicit":
            big = np.abs(ratings["rating"].to_numpy(np.float64)) > 1e30
            if big.any():
                raise DataValidationError(
                    f"column 'rating' of train must lie within +-1e30 (the model computes in "
                    f"float32, whose range ends at 3.4e38 and whose squares overflow long "
                    f"before); got {int(big.sum())} rows beyond, e.g. {ratings['rating'][big].iloc[0]!r}"
                )
        r = ratings["rating"].to_numpy(np.float32) if self.feedback == "explicit" else None
        self.seen_ = InteractionMatrix.build(u, i, U, r)
        self.item_categories_ = _item_categories(items, self.item_vocab_)
        self.item_titles_ = _item_titles(items, self.item_vocab_)
        n_neg = self.n_negatives
        if n_neg is None and N > 20_000:
            n_neg = 2048
        self.n_negatives_ = None if n_neg is None or n_neg >= N else n_neg

        device = torch.device(self.device)
        gen = torch.Generator().manual_seed(self.random_state)
        validate = self._make_validator(validation) if validation is not None else None  # checks it now
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.model_ = PersonaModel(
                U, N, K, self.n_factors, self.feedback, float(self.prevalence_concentration),
                rating_mean=float(r.mean()) if r is not None else 0.0,
                n_prototypes=self.n_prototypes, item_prior_scale=self.item_prior_scale,
                persona_prior_scale=self.persona_prior_scale, bias_prior_scale=self.bias_prior_scale,
                likelihood=self.likelihood,
            ).to(device)  # fmt: skip
            self.guide_ = make_guide(self.guide, self.model_, float(self.init_scale), gen)
            self._initialise_guide(u, i)
            self.guide_.to(device)
            # Lazy row-sparse updates when a step touches a small share of a table's rows,
            # so that a step costs O(batch) rather than O(users) (see bayes_persona.optim).
            ratio, big = self.sparse_update_ratio, self.sparse_min_floats
            KD = K * self.n_factors
            self.guide_.sparse_users = U > ratio * self.batch_size and U * KD >= big
            self.guide_.sparse_items = (
                self.n_negatives_ is not None and N > ratio * self.n_negatives_ and N * self.n_factors >= big
            )
            shard = None
            if _distributed():  # data-parallel: this rank samples its own users only
                from bayes_persona.distributed import UserShard

                shard = UserShard(self.seen_, device, self.random_state, gen)
            steps_per_epoch = max(1, math.ceil((U if shard is None else shard.max_users) / self.batch_size))
            config = SVIConfig(
                max_steps=self.max_epochs * steps_per_epoch,
                steps_per_epoch=steps_per_epoch,
                learning_rate=float(self.learning_rate),
                patience=self.patience,
                progress=self.progress,
                checkpoint_dir=checkpoint_dir,
                checkpoint_every=checkpoint_every,
                resume=resume,
            )
            seen = self.seen_.to(device) if shard is None else shard.seen

            def next_batch(g: torch.Generator) -> Batch:
                b = seen.sample_batch(g, self.batch_size, self.max_items_per_user, self.n_negatives_, N, device)
                return b if shard is None else shard.globalise(b)

            self.model_.train()
            failure = None
            try:
                result: SVIResult = run_svi(
                    self.model_, self.guide_, next_batch, gen, config, validate,
                    fingerprint=self._fingerprint(ratings), sync=shard,
                )  # fmt: skip
            except ModelFitError as exc:  # modules are back at their last good (finite) state
                failure, result = exc, exc.result
            except BaseException:
                del self.guide_  # e.g. a refused checkpoint or an interrupt: not fitted
                raise
        self.elbo_ = np.asarray(result.elbo)
        self.validation_ = result.validation
        self.n_steps_ = result.steps
        self.stopped_early_ = result.stopped_early
        self.converged_ = bool((result.stopped_early or not result.still_improving) and not result.fell_from_best)
        self._cache: dict[str, Any] = {}
        for p in list(self.model_.parameters()) + list(self.guide_.parameters()):
            p.requires_grad_(False)
        if failure is not None:
            raise failure
        if result.fell_from_best:
            warnings.warn(
                f"the fit drifted away from its optimum: the last epoch's mean ELBO is "
                f"{result.final_epoch_elbo:.4g}, against {result.best_epoch_elbo:.4g} at its best; "
                f"learning_rate={self.learning_rate:g} is likely too large (converged_ is False)",
                ConvergenceWarning,
                stacklevel=3,
            )
        elif not self.converged_:
            warnings.warn(
                f"the fit reached max_epochs={self.max_epochs} while its ELBO was still rising "
                "by more than its minibatch noise: the posterior, and so the intervals, may not "
                "have settled; raise max_epochs (or learning_rate) to check",
                ConvergenceWarning,
                stacklevel=3,
            )
        logger.info("fit %d steps; final epoch ELBO %.4g", result.steps, self.elbo_[-steps_per_epoch:].mean())
        return self

    def _initialise_guide(self, u: np.ndarray, i: np.ndarray) -> None:
        """Spectral item factors and k-means++ persona seeds (see :mod:`~bayes_persona.initialization`)."""
        U, N = len(self.user_vocab_), len(self.item_vocab_)
        q0 = spectral_item_factors(u, i, U, N, self.n_factors, self.random_state)
        p0, pi0 = seed_personas(
            q0, self.seen_.indptr.numpy(), self.seen_.indices.numpy(), self.n_personas,
            self.persona_init_length, self.random_state,
        )  # fmt: skip
        f32 = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
        if self.feedback == "implicit" and self.likelihood == "joint":
            pi0 = prevalence_from_shares(pi0, p0, q0)
        self.guide_.initialise(f32(q0), f32(p0), f32(pi0))
        if self.n_prototypes:  # prototypes start at taste clusters of the items, like personas
            c, _ = kmeans(q0, self.n_prototypes, self.random_state)
            with torch.no_grad():
                self.model_.prototype_loc[: len(c)] = f32(self.persona_init_length * c)

    persona_init_length = 3.0
    # A user (item) table gets lazy row-sparse updates when it has more than this many times
    # the rows a step touches (batch_size users, n_negatives sampled items) and at least
    # sparse_min_floats entries per parameter (smaller tables: dense Adam costs no more per
    # step and converges faster per epoch, e.g. on ML-100K).
    sparse_update_ratio = 8
    sparse_min_floats = 2**19

    # Settings that change how a fitted model is used, not what the fit computes: a
    # checkpoint written under other values of these is resumed.
    _INFERENCE_ONLY = ("n_draws", "hdi_prob", "device", "n_threads")

    def _fingerprint(self, ratings: pd.DataFrame) -> str:
        cfg = {k: v for k, v in self._config().items() if k not in self._INFERENCE_ONLY}
        h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
        cols = ["user_id", "item_id"] + (["rating"] if self.feedback == "explicit" else [])
        h.update(pd.util.hash_pandas_object(ratings[cols], index=False).to_numpy().tobytes())
        h.update(json.dumps(self.item_vocab_.to_dict(), sort_keys=True, default=str).encode())  # the catalogue
        return h.hexdigest()

    def _config(self) -> dict[str, Any]:
        cfg = self.get_params()
        cfg.pop("progress")
        return cfg

    def _make_validator(self, validation: Any):
        val = _as_ratings(validation, "validation")
        mu, iu = self.user_vocab_.index_of_known(val["user_id"].to_numpy())
        mi, ii = self.item_vocab_.index_of_known(val["item_id"].to_numpy())
        keep = mu & mi
        if not keep.any():
            raise DataValidationError("validation shares no (known user, known item) pair with train")
        u = torch.as_tensor(self.user_vocab_.encode(val["user_id"].to_numpy()[keep]))
        i = torch.as_tensor(self.item_vocab_.encode(val["item_id"].to_numpy()[keep]))
        r = torch.as_tensor(val["rating"].to_numpy(np.float32)[keep]) if self.feedback == "explicit" else None

        def validate() -> float:
            with torch.no_grad():
                return float(self._point_log_likelihood(u, i, r).mean())

        return validate

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
    def _dev(self) -> torch.device:
        return self.guide_.item_loc.device

    @property
    def posterior_(self) -> PersonaPosterior:
        """The fitted posterior: draws of every quantity and of every explanation.

        Raises :class:`~bayes_persona.exceptions.NotFittedError` before ``fit`` (and
        :class:`~bayes_persona.exceptions.ModelFitError` on non-finite parameters). See
        :class:`~bayes_persona.persona_posterior.PersonaPosterior`.
        """
        self._check_fitted()
        return PersonaPosterior(self)

    def _point_log_likelihood(self, u: torch.Tensor, i: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
        """Held-out log-likelihood per pair at the guide's location (a fast proxy)."""
        g, out = self.guide_, []
        dev = self._dev
        step = max(1, min(4096, _CHUNK_FLOATS // max(g.n_personas * g.n_items, 1)))  # (n, K, N) logits
        for s in range(0, len(u), step):
            uu, ii = u[s : s + step].to(dev), i[s : s + step].to(dev)
            p = g.persona_median(uu)  # (n, K, D)
            pi = g.prevalence_mean(uu)  # (n, K)
            q, b = g.item_loc, g.bias_loc
            aff = torch.einsum("nkd,nd->nk", p, q[ii])
            if self.feedback == "implicit":
                log_norm = log_softmax_normaliser(p, q, b, q.shape[0])
                log_w = persona_shares(torch.log(pi), log_norm, self.likelihood == "joint")
                out.append(torch.logsumexp(log_w + aff + b[ii, None] - log_norm, -1))
            else:
                m = self.model_
                att = torch.log_softmax(torch.log(pi) + aff / m.scale("temperature"), -1)
                mean = aff + (b[ii] + g.user_bias_loc[uu] + m.global_mean)[:, None]
                lp = torch.distributions.Normal(mean, m.scale("noise")).log_prob(r[s : s + step, None].to(dev))
                out.append(torch.logsumexp(att + lp, -1))
        return torch.cat(out).cpu()

    def _encode_users(self, user_ids: Any, name: str = "user_ids") -> tuple[np.ndarray, np.ndarray]:
        return PersonaPosterior(self).encode_users(user_ids, name)  # one implementation

    # ------------------------------------------------------------------ public API
    def score(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Posterior mean score of each pair ``(user_ids[j], item_ids[j])``.

        Implicit feedback: the posterior predictive probability that the user's next choice
        is the item, ``E[sum_k pi_uk softmax_k(i)]``. Explicit: the expected rating.

        Parameters
        ----------
        user_ids, item_ids : sequence, same length n

        Returns
        -------
        numpy.ndarray, shape (n,)
        """
        self._check_fitted()
        users = _as_id_list(user_ids, "user_ids")
        items = _as_id_list(item_ids, "item_ids")
        if len(users) != len(items):
            raise DataValidationError(
                f"user_ids and item_ids must have the same length; got {len(users)} and {len(items)}"
            )
        u = self.user_vocab_.encode(users)
        i = self.item_vocab_.encode(items)
        out = np.empty(len(u))
        uniq, inv = np.unique(u, return_inverse=True)
        step = self.posterior_.chunk_size(self.n_draws)
        with torch.no_grad():
            for s in range(0, len(uniq), step):
                chunk = uniq[s : s + step]
                full = self._scores(chunk)  # (B, N)
                sel = (inv >= s) & (inv < s + len(chunk))
                out[sel] = full[inv[sel] - s, i[sel]]
        return out

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
        self._check_fitted()
        frame = _as_ratings(data, "data")
        u = self.user_vocab_.encode(frame["user_id"].to_numpy())
        i = self.item_vocab_.encode(frame["item_id"].to_numpy())
        if self.feedback == "explicit" and "rating" not in frame.columns:
            raise DataValidationError("data needs a 'rating' column for an explicit-feedback model")
        r = frame["rating"].to_numpy(np.float32) if self.feedback == "explicit" else None
        out = np.empty(len(u))
        uniq, inv = np.unique(u, return_inverse=True)
        step = self.posterior_.chunk_size(self.n_draws)
        log_s = math.log(self.n_draws)
        with torch.no_grad():
            for s in range(0, len(uniq), step):
                chunk = uniq[s : s + step]
                sel = np.flatnonzero((inv >= s) & (inv < s + len(chunk)))
                b_idx = torch.as_tensor(inv[sel] - s, device=self._dev)
                i_idx = torch.as_tensor(i[sel], device=self._dev)
                log_joint, _, expected = self.posterior_.log_joint(chunk, self.n_draws)
                lj = log_joint.permute(1, 3, 0, 2)[b_idx, i_idx]  # (n, S, K)
                if self.feedback == "implicit":
                    per_draw = torch.logsumexp(lj, dim=-1)
                else:
                    mean = expected.permute(1, 3, 0, 2)[b_idx, i_idx]
                    rr = torch.as_tensor(r[sel], device=self._dev)[:, None, None]
                    noise = self.model_.scale("noise")
                    per_draw = torch.logsumexp(lj + torch.distributions.Normal(mean, noise).log_prob(rr), -1)
                out[sel] = (torch.logsumexp(per_draw, dim=1) - log_s).cpu().numpy()
        return out

    def _scores(self, users: np.ndarray) -> np.ndarray:
        return self._score_terms(users)[0].cpu().numpy()

    def _score_terms(self, users: np.ndarray):
        """``(scores (B, N), explain_at, order)`` for a chunk of users. ``scores`` is the
        posterior mean of ``P(i | u)`` (implicit) or of the rating (explicit);
        ``explain_at(idx)`` gives the per-draw ``P(z = k | u, i)`` (S, B, K, n) at item
        indices ``idx`` (B, n); ``order`` sorts each user's personas (B, K).

        Implicit feedback scores from one pass of per-user products over the catalogue
        (:meth:`PersonaPosterior.user_draws` with ``with_softmax``: ``P(i | u) = sum_k w_k
        softmax_k(i)``, averaged over draws), and explains only the items asked for
        (:meth:`PersonaPosterior.choice_at`)."""
        post, S = self.posterior_, self.n_draws
        if self.feedback == "implicit":
            d = post.user_draws(users, S, with_softmax=True)
            return d["scores"], lambda idx: post.choice_at(d, idx, S), post.persona_order(d["prevalence"])
        log_att, order, expected = post.log_joint(users, S)
        scores = (log_att.exp() * expected).sum(2).mean(0)

        def explain_at(idx: torch.Tensor) -> torch.Tensor:
            B, n = idx.shape
            return torch.gather(log_att, 3, idx[None, :, None, :].expand(S, B, log_att.shape[2], n)).exp()

        return scores, explain_at, order

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
        self._check_fitted()
        n = _check_int("n", n, 1)
        ids, u = self._encode_users(user_ids)
        # The output columns are allocated once, up front: nothing long-lived is allocated
        # between the chunks' large transient arrays, which glibc would otherwise strand in
        # the heap (resident memory then grew by about one chunk per chunk).
        out = {k: np.empty(len(u) * min(n, len(self.item_vocab_)), dtype=t) for k, t in _REC_COLUMNS}
        filled = 0
        step = self.posterior_.chunk_size(self.n_draws, items_per_user=n if self.feedback == "implicit" else None)
        with torch.no_grad():
            for s in range(0, len(u), step):
                chunk = u[s : s + step]
                scores, explain_at, order = self._score_terms(chunk)
                scores = scores.cpu().numpy()  # (B, N) for this chunk of users only
                if exclude_seen:
                    r, c = self.seen_.rows_of(chunk)
                    scores[r, c] = -np.inf
                tops = [top_n(scores[j], n) for j in range(len(chunk))]
                filled = self._rec_rows(out, filled, s, tops, scores, explain_at, order)
        sl = slice(0, filled)
        frame = pd.DataFrame(
            {
                "user_id": np.asarray(ids, dtype=object)[out["user"][sl]],
                "rank": out["rank"][sl],
                "item_id": self.item_vocab_.decode(out["item"][sl]),
                **{k: out[k][sl] for k, _ in _REC_COLUMNS[3:]},
            }
        ).astype({"user_id": self.user_vocab_.ids.dtype})
        return explanations.with_titles(self, frame, out["item"][sl])

    def titles(self, item_ids: Any) -> list[str]:
        """Titles of known items (the id as text where the items table gave none).

        Titles come from the ``title`` column of the items table given to :meth:`fit`
        (MovieLens loaders provide it); ``recommend``, ``explain`` and ``personas`` then
        carry them too.
        """
        self._check_fitted()
        return explanations.titles_of(self, self.item_vocab_.encode(_as_id_list(item_ids, "item_ids")))

    def _rec_rows(self, out: dict, filled: int, first: int, tops: list[np.ndarray], scores: np.ndarray, explain_at, order) -> int:
        """Write ``recommend``'s rows for a chunk of users (positions ``first``.. of the
        request) into ``out`` from row ``filled`` on; returns the new fill. Persona
        probabilities and their intervals are computed for the returned items only."""
        B, lens = len(tops), np.fromiter((len(t) for t in tops), dtype=np.int64, count=len(tops))
        n = int(lens.max(initial=0))
        valid = np.arange(n)[None, :] < lens[:, None]  # (B, n)
        top = np.zeros((B, n), dtype=np.int64)
        top[valid] = np.concatenate(tops) if B else np.zeros(0, dtype=np.int64)
        p_top = explain_at(torch.as_tensor(top, device=order.device))  # (S, B, K, n), slot order
        S, _, K, _ = p_top.shape
        p_top = torch.gather(p_top, 2, order[None, :, :, None].expand(S, B, K, n)).cpu().numpy()  # persona 0 = most prevalent
        median = np.median(p_top, axis=0)  # (B, K, n)
        persona = median.argmax(1)  # (B, n)
        chosen = np.take_along_axis(p_top, persona[None, :, None, :], axis=2)[:, :, 0]  # (S, B, n)
        point, low, high = summarise(chosen, self.hdi_prob, axis=0)
        cols = {
            "user": first + np.repeat(np.arange(B), lens),
            "rank": np.broadcast_to(np.arange(1, n + 1), (B, n))[valid],
            "item": top[valid],
            "score": np.take_along_axis(scores, top, axis=1)[valid],
            "persona": persona[valid],
            "persona_prob": point[valid],
            "persona_prob_low": low[valid],
            "persona_prob_high": high[valid],
        }
        m = int(lens.sum())
        for k, v in cols.items():
            out[k][filled : filled + m] = v
        return filled + m

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

        Reweights each user's ``n_draws`` guide draws towards the exact posterior of their
        personas and prevalence (given the item draws) and reports the Pareto shape ``k_hat``
        of the weights [1]_ [2]_: below 0.7 the draws (and so the user's intervals) agree
        with the exact posterior up to reweighting; above it the variational approximation
        misses where that posterior lies, and the user's intervals are not to be trusted.
        Implicit feedback only. See
        :meth:`~bayes_persona.persona_posterior.PersonaPosterior.importance_weights`.

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
        if user_ids is None:
            ids, users = self.user_vocab_.ids, np.arange(len(self.user_vocab_))
        else:
            ids, users = self._encode_users(user_ids)
        _, k_hat, ess = self.posterior_.importance_weights(users)
        return pd.DataFrame(
            {"user_id": np.asarray(ids), "k_hat": k_hat, "ess": ess, "reliable": k_hat < PSIS_K_THRESHOLD}
        ).astype({"user_id": self.user_vocab_.ids.dtype})

    def summary(self, users: Any = None):
        """Fit health and each user's personas at a glance.

        Parameters
        ----------
        users : sequence of ids, optional
            Default: every training user.

        Returns
        -------
        ModelSummary
            ``fit`` (data size, steps, epochs, ``converged``, final ELBO, last validation
            score) and ``personas`` (one row per user: number of active personas and the
            median prevalences); prints as text and shows as HTML in a notebook.
        """
        from bayes_persona.summary import summarise_model

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
            ``item_factors`` (S, N, D), ``item_bias`` (S, N), ``persona_factors``
            (S, U, K, D), ``prevalence`` (S, U, K) and, for ratings, ``user_bias`` (S, U);
            personas of each user ordered by posterior median prevalence. Row order follows
            ``item_vocab_`` and the requested users (or ``user_vocab_``).
        """
        self._check_fitted()
        num_samples = _check_int("num_samples", num_samples, 1)
        u = np.arange(len(self.user_vocab_)) if users is None else self._encode_users(users, "users")[1]
        with torch.no_grad():
            q, b = self.posterior_.item_draws(num_samples)
            d = self.posterior_.user_draws(u, num_samples)
            order = torch.argsort(d["prevalence"].mean(0), dim=-1, descending=True)  # (B, K)
            idx = order[None].expand(num_samples, -1, -1)
            out = {
                "item_factors": q.cpu().numpy(),
                "item_bias": b.cpu().numpy(),
                "persona_factors": torch.gather(
                    d["persona_factors"], 2, idx[..., None].expand_as(d["persona_factors"])
                ).cpu().numpy(),
                "prevalence": torch.gather(d["prevalence"], 2, idx).cpu().numpy(),
            }
            if self.feedback == "explicit":
                out["user_bias"] = d["user_bias"].cpu().numpy()
        return out

    def fold_in(self, history: Any, n_steps: int = 200, **kwargs: Any) -> PersonaRecommender:
        """Infer new users' personas from their histories, the items held fixed.

        Returns a **new** model that knows the new users only and shares this model's
        item parameters; this model is not changed. ``history`` has ``user_id``,
        ``item_id`` (and ``rating``); unknown items raise ``UnknownIdError``, users this
        model already knows raise ``DataValidationError``. Other keyword arguments
        (``learning_rate``, ``random_state``, ``progress``) and the design are described in
        :func:`bayes_persona.foldin.fold_in`.

        Examples
        --------
        >>> new = model.fold_in(new_user_history)  # doctest: +SKIP
        >>> new.recommend([new_user_id], n=10)  # doctest: +SKIP
        """
        from bayes_persona.foldin import fold_in

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
        meta = {
            "config": self._config(),
            "user_vocab": self.user_vocab_.to_dict(),
            "item_vocab": self.item_vocab_.to_dict(),
            "item_categories": {str(k): list(v) for k, v in self.item_categories_.items()},
            "item_titles": {str(k): v for k, v in self.item_titles_.items()},
            "n_negatives_": self.n_negatives_,
            "n_steps_": self.n_steps_,
            "stopped_early_": self.stopped_early_,
            "converged_": self.converged_,
            "validation_": [list(v) for v in self.validation_],
        }
        tensors = {f"model.{k}": v.detach().cpu() for k, v in self.model_.state_dict().items()}
        tensors.update({f"guide.{k}": v.detach().cpu() for k, v in self.guide_.state_dict().items()})
        tensors.update(self.seen_.tensors())
        tensors["elbo_"] = torch.as_tensor(self.elbo_, dtype=torch.float64)
        write_model_file(path, meta, tensors, key)
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
            self._validate_params()
        except (DataValidationError, DataTypeError) as exc:
            raise SaveFormatError(f"{path}: its config is not valid: {exc}") from exc
        bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()) and k != "elbo_")
        if bad:
            raise SaveFormatError(f"{path}: non-finite values in {bad}")
        self.user_vocab_ = Vocabulary.from_dict(meta["user_vocab"])
        self.item_vocab_ = Vocabulary.from_dict(meta["item_vocab"])
        self.item_categories_ = {int(k): tuple(v) for k, v in meta["item_categories"].items()}
        titles = meta.get("item_titles", {})
        if not isinstance(titles, dict) or not all(isinstance(v, str) for v in titles.values()):
            raise SaveFormatError(f"{path}: item_titles must map item indices to strings")
        self.item_titles_ = {int(k): v for k, v in titles.items()}
        self.n_negatives_ = meta["n_negatives_"]
        self.n_steps_ = meta["n_steps_"]
        self.stopped_early_ = meta["stopped_early_"]
        self.converged_ = bool(meta["converged_"])
        self.validation_ = [tuple(v) for v in meta["validation_"]]
        self.seen_ = InteractionMatrix.from_tensors(tensors)
        U, N = len(self.user_vocab_), len(self.item_vocab_)
        self.model_ = PersonaModel(
            U, N, self.n_personas, self.n_factors, self.feedback, float(self.prevalence_concentration),
            n_prototypes=self.n_prototypes, item_prior_scale=self.item_prior_scale,
                persona_prior_scale=self.persona_prior_scale, bias_prior_scale=self.bias_prior_scale,
            likelihood=self.likelihood,
        )  # fmt: skip
        idx = self.seen_.indices
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= N) or len(self.seen_.indptr) != U + 1:
            raise SaveFormatError(f"{path}: its training items do not fit its {U} users and {N} items")
        self.guide_ = make_guide(self.guide, self.model_, float(self.init_scale), torch.Generator().manual_seed(0))
        try:
            self.model_.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            self.guide_.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("guide.")})
        except RuntimeError as exc:
            raise SaveFormatError(f"{path}: parameters do not fit the saved config: {exc}") from exc
        for p in list(self.model_.parameters()) + list(self.guide_.parameters()):
            p.requires_grad_(False)
        self.elbo_ = tensors["elbo_"].numpy()
        self._cache = {}
        return self


# recommend's output columns as filled chunk by chunk (user = position in the request,
# item = item index), and their dtypes.
_REC_COLUMNS = (
    ("user", np.int64), ("rank", np.int64), ("item", np.int64), ("score", np.float64),
    ("persona", np.int64), ("persona_prob", np.float64), ("persona_prob_low", np.float64),
    ("persona_prob_high", np.float64),
)  # fmt: skip


def _item_titles(items: pd.DataFrame | None, vocab: Vocabulary) -> dict[int, str]:
    if items is None or "title" not in items.columns:
        return {}
    known, idx = vocab.index_of_known(items["item_id"].to_numpy())
    titles = items["title"].to_numpy()[known]
    return {int(i): str(t) for i, t in zip(idx, titles, strict=True) if isinstance(t, str) and t}


def _item_categories(items: pd.DataFrame | None, vocab: Vocabulary) -> dict[int, tuple[str, ...]]:
    if items is None or "categories" not in items.columns:
        return {}
    known, idx = vocab.index_of_known(items["item_id"].to_numpy())
    cats = items["categories"].to_numpy()[known]
    return {int(i): tuple(c) for i, c in zip(idx, cats, strict=True) if len(c)}
