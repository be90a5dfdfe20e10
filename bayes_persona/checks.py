"""Former location of :mod:`bayes_persona.diagnostics.ppc` (the posterior predictive checks).

This module is an alias kept so that imports of the documented path
``bayes_persona.checks`` keep working: importing it gives the module
:mod:`bayes_persona.diagnostics.ppc` itself (the same object, so its names, private
ones included, are those of the new module). New code should import from
``bayes_persona.diagnostics``.
"""

import sys

from bayes_persona.diagnostics import ppc as _module

sys.modules[__name__] = _module
