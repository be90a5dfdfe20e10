"""Former location of :mod:`bayes_persona.svi.optim`.

This module is an alias kept so that imports of the old path ``bayes_persona.optim``
keep working: importing it gives the module :mod:`bayes_persona.svi.optim` itself (the same
object, so its names, private ones included, are those of the new module). New code should
import from ``bayes_persona.svi``.
"""

import sys

from bayes_persona.svi import optim as _module

sys.modules[__name__] = _module
