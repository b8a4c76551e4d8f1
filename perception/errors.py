"""The one base class for errors a user can cause and fix.

Anything raised as a `PerceptionError` carries a message meant for people: the CLI prints it
on one line and exits with code 2, the HTTP service returns it as a 4xx JSON error.
"""


class PerceptionError(Exception):
    """A bad input, file, option or environment; the message says what and where."""
