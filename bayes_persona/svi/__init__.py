"""Stochastic variational inference, independent of the persona model.

- :mod:`~bayes_persona.svi.engine`: :func:`run_svi`, the loop (early stopping, divergence
  guard, atomic checkpoints) over any Pyro model and guide;
- :mod:`~bayes_persona.svi.importance`: a bound importance weighted within each user
  (:class:`~bayes_persona.svi.importance.LocalImportanceELBO`), the loss when
  ``SVIConfig.local_particles > 1``;
- :mod:`~bayes_persona.svi.optim`: Adam with lazy row-sparse updates;
- :mod:`~bayes_persona.svi.distributed`: data-parallel fits under ``torchrun``.

The package imports nothing eagerly.
"""
