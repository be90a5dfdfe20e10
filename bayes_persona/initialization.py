"""Former location of :mod:`bayes_persona.persona.initialization`.

This module is an alias kept so that imports of the old path ``bayes_persona.initialization``
keep working: importing it gives the module :mod:`bayes_persona.persona.initialization` itself (the same
object, so its names, private ones included, are those of the new module). New code should
import from ``bayes_persona.persona``.
"""

import sys

from bayes_persona.persona import initialization as _module

sys.modules[__name__] = _module
