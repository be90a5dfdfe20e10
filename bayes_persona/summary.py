"""Former location of :mod:`bayes_persona.persona.summary`.

This module is an alias kept so that imports of the old path ``bayes_persona.summary``
keep working: importing it gives the module :mod:`bayes_persona.persona.summary` itself (the same
object, so its names, private ones included, are those of the new module). New code should
import from ``bayes_persona.persona``.
"""

import sys

from bayes_persona.persona import summary as _module

sys.modules[__name__] = _module
