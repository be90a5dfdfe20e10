"""Metrics: exact values on hand-computed examples, plus properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_persona import evaluation as M
from bayes_persona.exceptions import DataTypeError, DataValidationError

LOG2_3 = math.log2(3)


def _recs(lists: dict[int, list[int]]) -> pd.DataFrame:
    rows = [(u, r + 1, i, float(-r)) for u, items in lists.items() for r, i in enumerate(items)]
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])


def _pairs(d: dict[int, list[int]]) -> pd.DataFrame:
    rows = [(u, i) for u, items in d.items() for i in items]
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


# user 1: hits at positions 2 and 5 of 5, three relevant items; user 2: hit at 1 of 1;
# user 3: relevant item but no recommendations (counts 0); user 4: no test (ignored)
RECS = _recs({1: [10, 11, 12, 13, 14], 2: [20, 21], 4: [40, 41]})
TEST = _pairs({1: [11, 14, 99], 2: [20], 3: [30]})


class TestAccuracyExact:
    def test_hit_rate(self) -> None:
        assert M.hit_rate(RECS, TEST, 5) == pytest.approx(2 / 3)
        assert M.hit_rate(RECS, TEST, 1) == pytest.approx(1 / 3)
        pu = M.hit_rate(RECS, TEST, 5, per_user=True)
        assert pu.to_dict() == {1: 1.0, 2: 1.0, 3: 0.0}
        assert pu.index.name == "user_id"

    def test_recall(self) -> None:
        pu = M.recall(RECS, TEST, 5, per_user=True)
        assert pu[1] == pytest.approx(2 / 3)  # 2 hits / min(5, 3)
        assert pu[2] == 1.0 and pu[3] == 0.0
        # k=2: user 1 has one hit in the top 2, normalised by min(2, 3) = 2
        assert M.recall(RECS, TEST, 2, per_user=True)[1] == pytest.approx(0.5)

    def test_precision(self) -> None:
        pu = M.precision(RECS, TEST, 5, per_user=True)
        assert pu.to_dict() == pytest.approx({1: 0.4, 2: 0.2, 3: 0.0})

    def test_ndcg(self) -> None:
        pu = M.ndcg(RECS, TEST, 5, per_user=True)
        dcg = 1 / LOG2_3 + 1 / math.log2(6)
        idcg = 1 + 1 / LOG2_3 + 1 / 2
        assert pu[1] == pytest.approx(dcg / idcg)
        assert pu[2] == pytest.approx(1.0)
        assert pu[3] == 0.0
        assert M.ndcg(RECS, TEST, 5) == pytest.approx((dcg / idcg + 1) / 3)
        # k=2: ideal DCG over min(2, 3) = 2 positions
        assert M.ndcg(RECS, TEST, 2, per_user=True)[1] == pytest.approx(
            (1 / LOG2_3) / (1 + 1 / LOG2_3)
        )

    def test_mrr(self) -> None:
        pu = M.mrr(RECS, TEST, 5, per_user=True)
        assert pu.to_dict() == pytest.approx({1: 0.5, 2: 1.0, 3: 0.0})
        assert M.mrr(RECS, TEST, 1, per_user=True)[1] == 0.0

    def test_map(self) -> None:
        pu = M.map_at_k(RECS, TEST, 5, per_user=True)
        assert pu[1] == pytest.approx((1 / 2 + 2 / 5) / 3)
        assert pu[2] == 1.0 and pu[3] == 0.0

    def test_rank_order_not_row_order(self) -> None:
        shuffled = RECS.sample(frac=1.0, random_state=3)
        for f in (M.hit_rate, M.recall, M.ndcg, M.mrr, M.map_at_k):
            assert f(shuffled, TEST, 3) == pytest.approx(f(RECS, TEST, 3))

    def test_duplicate_test_pairs_count_once(self) -> None:
        t2 = pd.concat([TEST, TEST])
        assert M.ndcg(RECS, t2, 5) == pytest.approx(M.ndcg(RECS, TEST, 5))

    def test_empty_test_gives_nan(self) -> None:
        empty = TEST.iloc[:0]
        assert math.isnan(M.ndcg(RECS, empty, 5))
        assert M.ndcg(RECS, empty, 5, per_user=True).empty


class TestValidation:
    def test_missing_column(self) -> None:
        with pytest.raises(DataValidationError, match="rank"):
            M.ndcg(RECS.drop(columns="rank"), TEST, 5)

    def test_not_a_frame(self) -> None:
        with pytest.raises(DataTypeError, match="recs"):
            M.ndcg([1, 2, 3], TEST, 5)

    @pytest.mark.parametrize("k", [0, -1])
    def test_bad_k(self, k: int) -> None:
        with pytest.raises(DataValidationError, match="k must"):
            M.recall(RECS, TEST, k)

    def test_float_k(self) -> None:
        with pytest.raises(DataTypeError, match="k must"):
            M.recall(RECS, TEST, 2.5)  # type: ignore[arg-type]

    def test_duplicate_recs(self) -> None:
        with pytest.raises(DataValidationError, match="duplicate"):
            M.hit_rate(pd.concat([RECS, RECS]), TEST, 5)

    def test_bad_distance(self) -> None:
        with pytest.raises(DataValidationError, match="distance"):
            M.tdd(RECS, TEST, 5, {10: ["a"]}, distance="l2")  # type: ignore[arg-type]


class TestBeyondAccuracy:
    def test_coverage(self) -> None:
        assert M.coverage(RECS, 20, 5) == pytest.approx(9 / 20)
        assert M.coverage(RECS, 20, 1) == pytest.approx(3 / 20)
        with pytest.raises(DataValidationError, match="n_catalog"):
            M.coverage(RECS, 0, 5)

    def test_ild_jaccard(self) -> None:
        cats = {10: ["a"], 11: ["a", "b"], 12: ["c"]}
        recs = _recs({1: [10, 11, 12], 2: [10]})
        pu = M.intra_list_diversity(recs, cats, 3, per_user=True)
        # pairs: (10,11) 1 - 1/2, (10,12) 1, (11,12) 1; user 2 has no pair
        assert pu.to_dict() == pytest.approx({1: 2.5 / 3})
        assert M.intra_list_diversity(recs, cats, 2) == pytest.approx(0.5)

    def test_ild_from_items_frame_and_missing_items(self) -> None:
        items = pd.DataFrame({"item_id": [10, 11], "categories": [["a"], ["a"]]})
        recs = _recs({1: [10, 11, 12, 13]})
        # 10-11 identical (0), 12 and 13 have no categories: distance 0 to each other,
        # 1 to the categorised items -> 4 of 6 pairs at distance 1
        assert M.intra_list_diversity(recs, items, 4) == pytest.approx(4 / 6)

    def test_novelty(self) -> None:
        train = _pairs({1: [10, 11], 2: [10], 3: [10], 4: [10]})
        recs = _recs({9: [10, 11, 77]})
        pu = M.novelty(recs, train, 2, per_user=True)
        assert pu[9] == pytest.approx((0.0 + 2.0) / 2)  # -log2(4/4), -log2(1/4)
        # item 77 is unseen in train: treated as seen by one user
        assert M.novelty(recs, train, 3) == pytest.approx((0 + 2 + 2) / 3)


class TestTDD:
    # history of user 1: item 10 {a}, item 11 {a, b} -> p = (a .75, b .25)
    TRAIN = _pairs({1: [10, 11]})
    CATS = pd.DataFrame({"item_id": [10, 11, 12], "categories": [["a"], ["a", "b"], ["b"]]})
    RECS = _recs({1: [12, 10]})  # prefix 1: q = (0, 1); prefix 2: q = (.5, .5)

    def test_category_tastes(self) -> None:
        t = M.category_tastes(self.CATS)
        assert t.to_dict("records") == [
            {"item_id": 10, "taste": "a", "weight": 1.0},
            {"item_id": 11, "taste": "a", "weight": 0.5},
            {"item_id": 11, "taste": "b", "weight": 0.5},
            {"item_id": 12, "taste": "b", "weight": 1.0},
        ]

    def test_tv(self) -> None:
        v = M.tdd(self.RECS, self.TRAIN, 2, self.CATS, distance="tv")
        assert v == pytest.approx((0.75 + 0.25) / 2)
        assert M.tdd(self.RECS, self.TRAIN, 1, self.CATS, distance="tv") == pytest.approx(0.75)

    def test_steck_kl(self) -> None:
        a = 0.01
        q1 = (a * 0.75, (1 - a) * 1 + a * 0.25)
        q2 = ((1 - a) * 0.5 + a * 0.75, (1 - a) * 0.5 + a * 0.25)
        kl1 = 0.75 * math.log(0.75 / q1[0]) + 0.25 * math.log(0.25 / q1[1])
        kl2 = 0.75 * math.log(0.75 / q2[0]) + 0.25 * math.log(0.25 / q2[1])
        v = M.tdd(self.RECS, self.TRAIN, 2, self.CATS)  # default "kl"
        assert v == pytest.approx((kl1 + kl2) / 2)

    def test_js(self) -> None:
        def js(p: tuple, q: tuple) -> float:
            m = [(x + y) / 2 for x, y in zip(p, q, strict=True)]
            kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b, strict=True) if x > 0)  # noqa: E731
            return 0.5 * kl(p, m) + 0.5 * kl(q, m)

        p = (0.75, 0.25)
        expected = (js(p, (0.0, 1.0)) + js(p, (0.5, 0.5))) / 2
        assert M.tdd(self.RECS, self.TRAIN, 2, self.CATS, distance="js") == pytest.approx(expected)

    def test_mapping_frame_equals_categories(self) -> None:
        mapping = M.category_tastes(self.CATS)
        for d in ("kl", "js", "tv"):
            assert M.tdd(self.RECS, self.TRAIN, 2, mapping, distance=d) == pytest.approx(
                M.tdd(self.RECS, self.TRAIN, 2, self.CATS, distance=d)
            )

    def test_item_weights_are_normalised(self) -> None:
        raw = pd.DataFrame(
            {"item_id": [10, 11, 11, 12], "taste": ["a", "a", "b", "b"], "weight": [3, 2, 2, 7]}
        )
        assert M.tdd(self.RECS, self.TRAIN, 2, raw, distance="tv") == pytest.approx(0.5)

    def test_user_specific_tastes(self) -> None:
        # user 1 sees items through personas x / y; user 2 through z only
        train = _pairs({1: [10, 11], 2: [10]})
        recs = _recs({1: [12], 2: [12]})
        mapping = pd.DataFrame(
            {
                "user_id": [1, 1, 1, 2, 2],
                "item_id": [10, 11, 12, 10, 12],
                "taste": ["x", "x", "y", "z", "z"],
                "weight": [1.0, 1.0, 1.0, 1.0, 1.0],
            }
        )
        pu = M.tdd(recs, train, 1, mapping, distance="tv", per_user=True)
        assert pu.to_dict() == pytest.approx({1: 1.0, 2: 0.0})

    def test_perfectly_calibrated_list(self) -> None:
        train = _pairs({1: [10, 12]})
        recs = _recs({1: [13, 14]})
        cats = {10: ["a"], 12: ["b"], 13: ["a", "b"], 14: ["b", "a"]}
        for d in ("kl", "js", "tv"):
            assert M.tdd(recs, train, 2, cats, distance=d) == pytest.approx(0.0, abs=1e-12)

    def test_items_without_tastes_are_skipped(self) -> None:
        recs = _recs({1: [99, 12, 10]})  # 99 has no category: prefix 1 is skipped
        v = M.tdd(recs, self.TRAIN, 3, self.CATS, distance="tv")
        assert v == pytest.approx((0.75 + 0.25) / 2)

    def test_lists_shorter_than_k(self) -> None:
        assert M.tdd(self.RECS, self.TRAIN, 10, self.CATS, distance="tv") == pytest.approx(0.5)


# ---------------------------------------------------------------------- properties
@st.composite
def ranking_case(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(2, 15))
    rec_rows, test_rows = [], []
    for u in range(n_users):
        lst = draw(st.permutations(range(n_items)))[: draw(st.integers(0, n_items))]
        rec_rows += [(u, r + 1, i) for r, i in enumerate(lst)]
        rel = draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=n_items))
        test_rows += [(u, i) for i in rel]
    k = draw(st.integers(1, n_items + 2))
    return (
        pd.DataFrame(rec_rows, columns=["user_id", "rank", "item_id"]),
        pd.DataFrame(test_rows, columns=["user_id", "item_id"]),
        k,
    )


ACC = [M.hit_rate, M.recall, M.precision, M.ndcg, M.mrr, M.map_at_k]


@settings(max_examples=60, deadline=None)
@given(ranking_case())
def test_accuracy_metrics_in_unit_interval(case: tuple) -> None:
    recs, test, k = case
    for f in ACC:
        pu = f(recs, test, k, per_user=True)
        assert set(pu.index) == set(test["user_id"])
        assert ((pu >= -1e-12) & (pu <= 1 + 1e-12)).all(), f.__name__
    # ordering: hit >= recall-normalised quantities
    hr, ndcg, mrr = (f(recs, test, k, per_user=True) for f in (M.hit_rate, M.ndcg, M.mrr))
    assert (hr + 1e-12 >= ndcg).all() and (hr + 1e-12 >= mrr).all()


@settings(max_examples=60, deadline=None)
@given(ranking_case())
def test_perfect_ranking_scores_one(case: tuple) -> None:
    _, test, k = case
    rows = []
    for u, g in test.groupby("user_id"):
        rows += [(u, r + 1, i) for r, i in enumerate(g["item_id"])]
        rows += [(u, len(g) + 1 + j, 1000 + j) for j in range(3)]  # irrelevant tail
    recs = pd.DataFrame(rows, columns=["user_id", "rank", "item_id"])
    for f in (M.hit_rate, M.recall, M.ndcg, M.mrr, M.map_at_k):
        assert f(recs, test, k) == pytest.approx(1.0), f.__name__


@settings(max_examples=40, deadline=None)
@given(ranking_case(), st.sampled_from(["kl", "js", "tv"]))
def test_tdd_ranges(case: tuple, distance: str) -> None:
    recs, test, k = case
    cats = {i: [f"c{i % 3}"] + ([f"c{i % 2 + 3}"] if i % 4 == 0 else []) for i in range(20)}
    pu = M.tdd(recs, test, k, cats, distance=distance, per_user=True)
    assert (pu >= -1e-12).all()
    if distance != "kl":
        assert (pu <= 1 + 1e-12).all()
    else:
        assert (pu <= math.log(1 / 0.01) + 1e-9).all()  # C_KL <= log(1 / alpha)


@settings(max_examples=40, deadline=None)
@given(ranking_case())
def test_ild_range(case: tuple) -> None:
    recs, _, k = case
    cats = {i: [f"c{i % 3}", f"d{i % 2}"] for i in range(20)}
    v = M.intra_list_diversity(recs, cats, k, per_user=True)
    assert ((v >= 0) & (v <= 1)).all()


# ---------------------------------------------------------------------- statistics
class TestBootstrap:
    def test_constant(self) -> None:
        assert M.bootstrap_ci(pd.Series([0.3] * 40)) == pytest.approx((0.3, 0.3, 0.3))

    def test_interval_contains_mean_and_is_seeded(self) -> None:
        rng = np.random.default_rng(0)
        v = pd.Series(rng.random(200))
        mean, lo, hi = M.bootstrap_ci(v, n_boot=500, seed=1)
        assert mean == pytest.approx(v.mean())
        assert lo < mean < hi
        # the standard error of a uniform mean over 200 users is about 0.02
        assert 0.04 < hi - lo < 0.12
        assert M.bootstrap_ci(v, n_boot=500, seed=1) == (mean, lo, hi)
        assert M.bootstrap_ci(v, n_boot=500, seed=2) != (mean, lo, hi)

    def test_nan_dropped_empty_and_zero_boot(self) -> None:
        assert M.bootstrap_ci([1.0, np.nan, 3.0], n_boot=50)[0] == pytest.approx(2.0)
        assert all(math.isnan(x) for x in M.bootstrap_ci([]))
        mean, lo, hi = M.bootstrap_ci([1.0, 2.0], n_boot=0)
        assert mean == 1.5 and math.isnan(lo) and math.isnan(hi)

    def test_bad_args(self) -> None:
        with pytest.raises(DataValidationError, match="ci"):
            M.bootstrap_ci([1.0], ci=1.5)
        with pytest.raises(DataValidationError, match="n_boot"):
            M.bootstrap_ci([1.0], n_boot=-1)


class TestPairedTest:
    def test_shift(self) -> None:
        rng = np.random.default_rng(0)
        b = pd.Series(rng.random(100), index=range(100))
        a = b + 0.1
        res = M.paired_test(a, b, n_boot=200, seed=0)
        assert res.mean_diff == pytest.approx(0.1)
        assert res.low == pytest.approx(0.1) and res.high == pytest.approx(0.1)
        assert res.p_value == pytest.approx(1 / 201)
        assert res.n_users == 100

    def test_identical_gives_p_one(self) -> None:
        a = pd.Series([0.1, 0.5, 0.9])
        res = M.paired_test(a, a.copy(), n_boot=100)
        assert res.mean_diff == 0 and res.p_value == 1.0

    def test_common_users_only(self) -> None:
        a = pd.Series({1: 1.0, 2: 0.0, 3: 1.0})
        b = pd.Series({2: 0.0, 3: 0.0, 4: 1.0})
        res = M.paired_test(a, b, n_boot=50)
        assert res.n_users == 2 and res.mean_diff == pytest.approx(0.5)

    def test_noise_is_not_significant(self) -> None:
        rng = np.random.default_rng(3)
        a = pd.Series(rng.normal(size=300))
        b = pd.Series(rng.normal(size=300))
        res = M.paired_test(a, b, n_boot=500, seed=0)
        assert res.p_value > 0.05
        assert res.low < 0 < res.high
        mean_diff, low, high, p, n = res  # unpacks as a tuple
        assert n == 300

    def test_arrays_of_different_length(self) -> None:
        with pytest.raises(DataValidationError, match="equal length"):
            M.paired_test(np.ones(3), np.ones(4))
