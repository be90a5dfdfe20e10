"""The Bayesian multi-persona model and everything that owns its posterior.

- :mod:`~bayes_persona.persona.model`: the generative model (a Pyro program) and its guides;
- :mod:`~bayes_persona.persona.estimator`: :class:`~bayes_persona.PersonaRecommender`, the
  thin scikit-learn-style estimator users call;
- :mod:`~bayes_persona.persona.posterior`: :class:`PersonaPosterior`, the fitted posterior's
  draws, explanations and importance weights;
- :mod:`~bayes_persona.persona.fitting`, :mod:`~bayes_persona.persona.initialization`: what
  ``fit`` does (data checks, model building, initialisation, the SVI run);
- :mod:`~bayes_persona.persona.predictions`, :mod:`~bayes_persona.persona.explanations`:
  scores, top-n lists and explanation tables;
- :mod:`~bayes_persona.persona.persistence`, :mod:`~bayes_persona.persona.foldin`,
  :mod:`~bayes_persona.persona.interactions`, :mod:`~bayes_persona.persona.summary`: saved
  files, new users, the training matrix, the fit summary.

The package imports nothing eagerly; import the modules (or use ``bayes_persona``'s
top-level names).
"""
