"""Former location of :mod:`bayes_persona.svi.engine`.

This module is an alias kept so that imports of the old path ``bayes_persona.inference``
keep working: importing it gives the module :mod:`bayes_persona.svi.engine` itself (the same
object, so its names, private ones included, are those of the new module). New code should
import from ``bayes_persona.svi``.
"""

import sys

from bayes_persona.svi import engine as _module

sys.modules[__name__] = _module
