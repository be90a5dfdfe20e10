"""``fit(..., sample_weight=)``: a row of weight c is c independent choices of its item."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import pytest
import torch

import bayes_persona as bp
from bayes_persona.exceptions import DataTypeError, DataValidationError
from bayes_persona.persona import fitting
from bayes_persona.persona.interactions import InteractionMatrix
from bayes_persona.persona.model import Batch, PersonaModel, make_guide

pytestmark = pytest.mark.filterwarnings("ignore::bayes_persona.ConvergenceWarning")


@pytest.fixture(scope="module")
def world():
    data, _ = bp.make_synthetic(n_users=40, n_items=60, n_tastes=3, interactions_per_user=(6, 12), seed=5)
    return data.ratings[["user_id", "item_id"]]


def small(**kw):
    return bp.PersonaRecommender(**{"n_personas": 2, "n_factors": 4, "max_epochs": 20, "batch_size": 16,
                                    "n_draws": 20, "progress": False, **kw})  # fmt: skip


@pytest.mark.parametrize("joint", [True, False])
def test_a_weight_counts_as_that_many_repeated_choices(joint):
    # The model's log density with weights equals it with each weighted pick repeated.
    torch.manual_seed(0)
    U, N, K, D = 4, 9, 2, 3
    model = PersonaModel(U, N, K, D, likelihood="joint" if joint else "mixture")
    guide = make_guide("meanfield", model, 0.3, torch.Generator().manual_seed(0))
    picks = [[0, 3, 5], [1, 2], [4, 6, 7, 8], [2]]
    counts = [[2, 1, 3], [1, 4], [1, 1, 2, 1], [5]]

    def batch(rows, weights):
        L = max(map(len, rows))
        it = torch.zeros(U, L, dtype=torch.long)
        mask = torch.zeros(U, L, dtype=torch.bool)
        w = None if weights is None else torch.ones(U, L)  # padding: masked, and pyro refuses a zero scale
        for u, r in enumerate(rows):
            it[u, : len(r)], mask[u, : len(r)] = torch.as_tensor(r), True
            if weights is not None:
                w[u, : len(r)] = torch.as_tensor(weights[u], dtype=torch.float)
        return Batch(torch.arange(U), it, mask, torch.ones(U), obs_weight=w)

    repeated = [[i for i, c in zip(r, cs, strict=True) for _ in range(c)] for r, cs in zip(picks, counts, strict=True)]

    def log_density(b):
        torch.manual_seed(1)
        tr = pyro.poutine.trace(guide).get_trace(b)
        return pyro.poutine.trace(pyro.poutine.replay(model, trace=tr)).get_trace(b).log_prob_sum().item()

    with torch.no_grad():
        weighted, dup = log_density(batch(picks, counts)), log_density(batch(repeated, None))
        plain = log_density(batch(picks, None))
    assert weighted == pytest.approx(dup, rel=1e-5)
    assert abs(weighted - plain) > 1.0  # the weights matter


def test_unit_weights_give_the_unweighted_fit_bit_for_bit(world):
    a = small().fit(world)
    b = small().fit(world, sample_weight=np.ones(len(world)))
    for x, y in zip(a.guide_.state_dict().values(), b.guide_.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert a.seen_.weights is None and b.seen_.weights is not None


def test_a_heavily_weighted_item_gains_over_its_unweighted_fit(world):
    # Item 1's rows stand for 8 choices each: the fit must raise its popularity (bias) and
    # the share of every user's probability it gets, against the same fit without weights.
    heavy = world["item_id"].value_counts().index[0]
    w = np.where(world["item_id"] == heavy, 8.0, 1.0)
    plain, weighted = small().fit(world), small().fit(world, sample_weight=w)
    j = plain.item_vocab_.encode([heavy])[0]
    assert weighted.guide_.bias_loc[j] > plain.guide_.bias_loc[j] + 0.1  # 0.35 against 0.17 when written
    users = world["user_id"].unique()
    s_plain = plain.score(users, np.full(len(users), heavy))
    s_weighted = weighted.score(users, np.full(len(users), heavy))
    assert (s_weighted > s_plain).mean() > 0.9


def test_weights_travel_with_the_interactions(world, tmp_path):
    w = np.random.default_rng(0).integers(1, 4, size=len(world)).astype(float)
    m = small(max_epochs=3).fit(world, sample_weight=pd.Series(w))
    # the CSR keeps each row's weight beside its item
    u = m.user_vocab_.encode(world["user_id"].to_numpy())
    i = m.item_vocab_.encode(world["item_id"].to_numpy())
    lookup = dict(zip(zip(u.tolist(), i.tolist(), strict=True), w.tolist(), strict=True))
    rows, cols = m.seen_.rows_of(np.arange(len(m.user_vocab_)))
    got = m.seen_.weights_of(np.arange(len(m.user_vocab_)))
    assert got.tolist() == [lookup[(int(r), int(c))] for r, c in zip(rows, cols, strict=True)]
    path = tmp_path / "m.bp"
    m.save(path)
    again = bp.PersonaRecommender.load(path)
    np.testing.assert_array_equal(again.seen_.weights_of(np.arange(len(m.user_vocab_))), got)
    # and the per-user likelihood of the importance diagnostics counts them
    lw_weighted, _, _ = m.posterior_.importance_weights(np.arange(3))
    m.seen_ = InteractionMatrix(m.seen_.indptr, m.seen_.indices, None)  # the same fit, weights dropped
    m._cache.clear()
    lw_plain, _, _ = m.posterior_.importance_weights(np.arange(3))
    assert np.isfinite(lw_weighted).all() and not np.allclose(lw_weighted, lw_plain)


def test_a_checkpoint_of_other_weights_is_not_resumed(world):
    est = small()
    data = fitting.training_data(est, world)
    ones = fitting.fingerprint(est, data.ratings, data.item_vocab, np.ones(len(world)))
    twos = fitting.fingerprint(est, data.ratings, data.item_vocab, np.full(len(world), 2.0))
    assert len({fitting.fingerprint(est, data.ratings, data.item_vocab), ones, twos}) == 3


@pytest.mark.parametrize(
    ("kwargs", "weights", "error", "match"),
    [
        ({}, "length", DataValidationError, r"one entry per row of train \(\d+\); got 3"),
        ({}, "negative", DataValidationError, "finite and positive; got 1 entries that are not, first -1.0 at row 2"),
        ({}, "nan", DataValidationError, "finite and positive"),
        ({}, "zero", DataValidationError, "finite and positive"),
        ({}, "text", DataTypeError, "1-D array of numbers"),
        ({}, "matrix", DataTypeError, "1-D array of numbers"),
        ({"feedback": "explicit"}, "ones", DataValidationError, "sample_weight is for feedback='implicit'"),
    ],
)
def test_bad_weights_are_refused_before_anything_is_fitted(world, kwargs, weights, error, match):
    n = len(world)
    w = {
        "length": np.ones(3), "negative": np.r_[1.0, 1.0, -1.0, np.ones(n - 3)], "nan": np.r_[np.nan, np.ones(n - 1)],
        "zero": np.zeros(n), "text": np.array(["a"] * n), "matrix": np.ones((n, 2)), "ones": np.ones(n),
    }[weights]  # fmt: skip
    train = world.assign(rating=4.0) if kwargs.get("feedback") == "explicit" else world
    m = small(**kwargs)
    with pytest.raises(error, match=match):
        m.fit(train, sample_weight=w)
    assert not hasattr(m, "guide_")


def test_fold_in_counts_weights_as_fit_does(world):
    # A new user's history of two items, one standing for 8 choices: the folded-in user
    # leans to it, against the same fold-in without weights; unit weights change nothing.
    m = small(max_epochs=10).fit(world)
    a, b = world["item_id"].value_counts().index[[3, 4]]
    history = pd.DataFrame({"user_id": [10_000, 10_000], "item_id": [a, b]})
    plain = m.fold_in(history, n_steps=150, random_state=0)
    ones = m.fold_in(history, n_steps=150, random_state=0, sample_weight=np.ones(2))
    heavy = m.fold_in(history, n_steps=150, random_state=0, sample_weight=[8.0, 1.0])
    np.testing.assert_array_equal(heavy.seen_.weights_of(np.array([0])), [8.0, 1.0])
    for x, y in zip(plain.guide_.state_dict().values(), ones.guide_.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)

    def lean(model):
        s = model.score([10_000, 10_000], [a, b])
        return float(s[0] - s[1])

    assert lean(heavy) > lean(plain) + 0.1  # 0.18 against 0.01 when written; ignored weights give equal


@pytest.mark.parametrize(("weights", "error", "match"), [
    (np.ones(3), DataValidationError, r"one entry per row of history \(2\); got 3"),
    ([1.0, 0.0], DataValidationError, "finite and positive"),
    (["a", "b"], DataTypeError, "one per row of history"),
])  # fmt: skip
def test_fold_in_refuses_bad_weights(world, weights, error, match):
    m = small(max_epochs=2).fit(world)
    history = pd.DataFrame({"user_id": [10_000, 10_000], "item_id": world["item_id"].iloc[:2].to_numpy()})
    with pytest.raises(error, match=match):
        m.fold_in(history, sample_weight=weights)


def test_inference_data_of_a_weighted_fit_counts_each_rows_choices(world):
    # The pointwise log-likelihood of a row of weight c is c log p(i | u), the weights are in
    # constant_data, and an unweighted fit's export has neither.
    from bayes_persona.diagnostics.inference_data import to_inference_data

    w = np.random.default_rng(1).integers(1, 4, size=len(world)).astype(float)
    m = small(max_epochs=3).fit(world, sample_weight=w)
    users = world["user_id"].unique()[:5]
    idata = to_inference_data(m, 20, users=users)
    cw = idata.constant_data["choice_weight"].values
    ll = idata.log_likelihood["choice"].values[0]  # (draw, obs)
    lookup = dict(zip(zip(world["user_id"], world["item_id"], strict=True), w, strict=True))
    obs = idata.observed_data
    expect = [lookup[(u, i)] for u, i in zip(obs["user_id"].values, obs["item_id"].values, strict=True)]
    np.testing.assert_array_equal(cw, expect)
    m.seen_ = InteractionMatrix(m.seen_.indptr, m.seen_.indices, None)  # the same fit, weights dropped
    m._cache.clear()
    plain = to_inference_data(m, 20, users=users)
    assert "choice_weight" not in plain.constant_data
    np.testing.assert_allclose(ll, plain.log_likelihood["choice"].values[0] * cw, rtol=1e-6)
    assert (cw > 1).any()
