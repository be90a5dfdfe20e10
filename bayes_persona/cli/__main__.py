"""``python -m bayes_persona.cli``: the ``bayes-persona`` command line (see :mod:`bayes_persona.cli`)."""

import sys

from bayes_persona.cli import main

if __name__ == "__main__":
    sys.exit(main())
