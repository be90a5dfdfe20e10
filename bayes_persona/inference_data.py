"""Former location of :mod:`bayes_persona.diagnostics.inference_data` (the ArviZ export (:func:`to_inference_data`, :func:`explanation_inference_data`)).

This module is an alias kept so that imports of the documented path
``bayes_persona.inference_data`` keep working: importing it gives the module
:mod:`bayes_persona.diagnostics.inference_data` itself (the same object, so its names, private
ones included, are those of the new module). New code should import from
``bayes_persona.diagnostics``.
"""

import sys

from bayes_persona.diagnostics import inference_data as _module

sys.modules[__name__] = _module
