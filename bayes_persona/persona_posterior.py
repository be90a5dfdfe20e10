"""Former location of :mod:`bayes_persona.persona.posterior`.

This module is an alias kept so that imports of the old path ``bayes_persona.persona_posterior``
keep working: importing it gives the module :mod:`bayes_persona.persona.posterior` itself (the same
object, so its names, private ones included, are those of the new module). New code should
import from ``bayes_persona.persona``.
"""

import sys

from bayes_persona.persona import posterior as _module

sys.modules[__name__] = _module
