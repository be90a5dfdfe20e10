"""Former location of :mod:`bayes_persona.diagnostics.plotting` (the diagnostic plots).

This module is an alias kept so that imports of the documented path
``bayes_persona.plotting`` keep working: importing it gives the module
:mod:`bayes_persona.diagnostics.plotting` itself (the same object, so its names, private
ones included, are those of the new module). New code should import from
``bayes_persona.diagnostics``.
"""

import sys

from bayes_persona.diagnostics import plotting as _module

sys.modules[__name__] = _module
