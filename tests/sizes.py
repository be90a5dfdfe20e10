"""Problem sizes of the slow accuracy tests.

``BAYES_PERSONA_TEST_SIZE=smoke`` (CI) runs them small enough for a 2-core machine;
``full`` (the default outside CI) at the sizes the issues state.
"""

from __future__ import annotations

import os


def test_size() -> str:
    size = os.environ.get("BAYES_PERSONA_TEST_SIZE", "full")
    if size not in ("smoke", "full"):
        raise ValueError(f"BAYES_PERSONA_TEST_SIZE must be 'smoke' or 'full'; got {size!r}")
    return size


def pick(smoke, full):
    """``smoke`` or ``full`` according to BAYES_PERSONA_TEST_SIZE."""
    return smoke if test_size() == "smoke" else full
