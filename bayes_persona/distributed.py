"""Former location of :mod:`bayes_persona.svi.distributed`.

This module is an alias kept so that imports of the old path ``bayes_persona.distributed``
keep working: importing it gives the module :mod:`bayes_persona.svi.distributed` itself (the same
object, so its names, private ones included, are those of the new module). New code should
import from ``bayes_persona.svi``.
"""

import sys

from bayes_persona.svi import distributed as _module

sys.modules[__name__] = _module
