"""The one exception type a user mistake raises.

Every check at a boundary (command-line option, TOML/JSON file, API argument) raises
:class:`InputError` with a message that names the argument, the rule and the value. The CLI
prints it as one line and exits with code 2; library callers can catch it as a ``ValueError``.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A value given by the user breaks a documented rule."""
