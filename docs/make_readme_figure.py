"""Draw the README's explanation plot: ``python docs/make_readme_figure.py``.

Fits the model on the demo's planted-persona data and draws, for a user with two planted
tastes, each recommendation with the persona that explains it and its 90% interval.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

import bayes_persona as bp  # noqa: E402
from bayes_persona.diagnostics.plotting import plot_explanations, plot_persona_map  # noqa: E402

torch.set_num_threads(1)
OUT = Path(__file__).with_name("explanation.png")


def main() -> None:
    data, truth = bp.make_synthetic(seed=0)
    model = bp.PersonaRecommender(max_epochs=150, progress=False).fit(data)
    counts = truth.user_tastes.groupby("user_id").size()
    user = int(counts[counts == 2].index[0])
    recs = model.recommend([user], n=12)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    plot_explanations(recs, user_id=user, ax=axes[0])
    plot_persona_map(model, user, ax=axes[1])
    tastes = ", ".join(f"{r.taste} {r.weight:.0%}" for r in truth.user_tastes[truth.user_tastes.user_id == user].itertuples())
    fig.suptitle(f"user {user} (planted tastes: {tastes})")
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
