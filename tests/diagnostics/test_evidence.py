"""Each user's ELBO term (bayes_persona.diagnostics.evidence.user_elbo) and the persona-count
comparison built on it (persona_count_evidence)."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import bayes_persona as bp
from bayes_persona.diagnostics.evidence import _full_batch, persona_count_evidence, user_elbo


@pytest.fixture(scope="module")
def fitted():
    data, _ = bp.make_synthetic(n_users=120, n_items=200, n_tastes=4, interactions_per_user=(10, 30), seed=0)
    return bp.PersonaRecommender(n_personas=3, n_factors=8, max_epochs=60, progress=False, random_state=0).fit(data)


def test_user_terms_add_up_to_pyros_elbo(fitted) -> None:
    """The users' terms plus the items' term (-KL, in closed form) are Pyro's Trace_ELBO on
    the whole data, estimated independently: within 25 nats of about 16,500 (the two
    estimates' standard errors are about 5). Scored 50 users at a time of 120, so a term
    left scaled by the subsample (x 2.4), or a missing prior or entropy term, misses."""
    ev = user_elbo(fitted, n_particles=32, n_item_draws=8, batch_size=50)
    g, mod = fitted.guide_, fitted.model_
    batch = _full_batch(fitted.seen_, torch.arange(len(fitted.user_vocab_)))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        loss = np.mean([pyro.infer.Trace_ELBO(max_plate_nesting=2).differentiable_loss(mod, g, batch).item()
                        for _ in range(200)])  # fmt: skip
        kl = (kl_divergence(Normal(g.item_loc, g._pos(g.item_raw_scale)), Normal(0.0, mod.scale("item_scale"))).sum()
              + kl_divergence(Normal(g.bias_loc, g._pos(g.bias_raw_scale)), Normal(0.0, mod.scale("bias_scale"))).sum())  # fmt: skip
    assert abs(ev["elbo"].sum() - (-loss + kl.item())) < 25.0, (ev["elbo"].sum(), -loss + kl.item())
    assert (ev["iw_bound"] >= ev["elbo"] - 1e-9).all()
    assert list(ev["user_id"]) == list(fitted.user_vocab_.ids)
    assert (ev["n_interactions"] == fitted.seen_.counts.numpy()).all()


def test_a_user_given_another_users_personas_scores_lower(fitted) -> None:
    """Swap two users' persona factors: both users' ELBO terms fall, the others' do not move."""
    before = user_elbo(fitted, n_particles=16, n_item_draws=2)
    g = fitted.guide_
    with torch.no_grad():
        saved = g.persona_loc.detach().clone()
        g.persona_loc[[0, 1]] = saved[[1, 0]]
    try:
        after = user_elbo(fitted, n_particles=16, n_item_draws=2)
    finally:
        with torch.no_grad():
            g.persona_loc.copy_(saved)
    assert (after["elbo"][:2].to_numpy() < before["elbo"][:2].to_numpy() - 1.0).all()
    np.testing.assert_allclose(after["elbo"][2:], before["elbo"][2:], rtol=1e-9)


def test_user_elbo_is_seeded_and_leaves_torch_alone(fitted) -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = user_elbo(fitted, n_particles=4, n_item_draws=1, random_state=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = user_elbo(fitted, n_particles=4, n_item_draws=1, random_state=3)
    c = user_elbo(fitted, n_particles=4, n_item_draws=1, random_state=4)
    assert a.equals(b) and not a.equals(c)


def test_user_elbo_refuses_bad_arguments(fitted) -> None:
    with pytest.raises(bp.DataValidationError, match="n_particles"):
        user_elbo(fitted, n_particles=0)
    with pytest.raises(bp.NotFittedError):
        user_elbo(bp.PersonaRecommender())


def _two_counts(n_tastes: int):
    """Fits with one and two personas of a world whose users have one or two of ``n_tastes``
    tastes, in two dimensions."""
    data, truth = bp.make_synthetic(seed=0, n_users=150, n_items=300, n_tastes=n_tastes, tastes_per_user=(1, 2),
                                    interactions_per_user=(30, 50), n_dims=2, multi_taste_prob=0.0)  # fmt: skip
    fits = [
        bp.PersonaRecommender(n_personas=k, n_factors=2, batch_size=64, learning_rate=0.02, max_epochs=300,
                              prevalence_concentration=0.5, random_state=0, progress=False).fit(data)
        for k in (2, 1)
    ]  # fmt: skip
    return fits, truth


def test_the_evidence_finds_the_users_who_need_two_personas() -> None:
    """Twelve tastes in two dimensions: the pairs of tastes users like cannot all be laid out
    near each other, so one vector cannot stand for a two-taste user and the bound should
    prefer two personas for them, and not for one-taste users (measured: 59% against 8%).
    A sign error in the gap, or a comparison of a fit with itself, fails."""
    fits, truth = _two_counts(12)
    table = persona_count_evidence(fits, n_particles=16, n_item_draws=2)
    assert list(table["n_personas"].unique()) == [1, 2]  # increasing K, whatever the order given
    one, two = (table[table["n_personas"] == k].set_index("user_id") for k in (1, 2))
    assert (one["gap"] == 0).all() and (one["symmetry_allowance"] == 0).all()
    np.testing.assert_allclose(two["gap"], two["iw_bound"] - one["iw_bound"])
    np.testing.assert_allclose(two["gap_upper"], two["gap"] + np.log(2))
    tastes = truth.n_tastes_per_user.reindex(two.index)
    prefer = (two["gap"] > 0).groupby(tastes).mean()
    assert prefer[1] <= 0.2, prefer.to_dict()
    assert prefer[2] >= prefer[1] + 0.3, prefer.to_dict()


def test_persona_count_evidence_refuses_bad_arguments(fitted) -> None:
    with pytest.raises(bp.DataValidationError, match="at least two"):
        persona_count_evidence([fitted])
    with pytest.raises(bp.DataValidationError, match="different n_personas"):
        persona_count_evidence([fitted, fitted])
    with pytest.raises(bp.DataValidationError, match="models must be a sequence"):
        persona_count_evidence(fitted)
    with pytest.raises(bp.DataValidationError, match="models\\[1\\] must be a PersonaRecommender"):
        persona_count_evidence([fitted, "K=1"])
    other = bp.PersonaRecommender(n_personas=1, n_factors=8, max_epochs=2, progress=False).fit(
        bp.make_synthetic(n_users=20, n_items=60, n_tastes=2, tastes_per_user=(1, 2), interactions_per_user=(5, 10),
                          seed=1).dataset)
    with pytest.raises(bp.DataValidationError, match="are not users of models"):
        persona_count_evidence([fitted, other], users=list(fitted.user_vocab_.ids[-3:]))
    with pytest.raises(bp.NotFittedError):
        persona_count_evidence([fitted, bp.PersonaRecommender(n_personas=1)])


def test_the_readme_example_of_persona_count_evidence_runs() -> None:
    """The README's snippet runs as written on a small training set and gives a share."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "persona_count_evidence" in b)
    train = bp.make_synthetic(n_users=40, n_items=80, n_tastes=3, interactions_per_user=(10, 20), seed=2).dataset
    lines = block.strip().splitlines()
    namespace = {"bp": bp, "train": train}
    exec("\n".join(lines[:-1]), namespace)  # noqa: S102 (the README's own code)
    share = eval(lines[-1].split("#")[0], namespace)  # noqa: S307
    assert 0.0 <= share <= 1.0
    assert set(namespace["table"]["n_personas"]) == {1, 4}
