"""Errors that a user can cause and fix; the CLI prints them as one sentence, no traceback."""


class DgmError(Exception):
    """A mistake in input, data or configuration: the message says what is wrong and what to do."""


class DivergenceError(DgmError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


class Interrupted(DgmError):
    """The user pressed Ctrl-C; the message says what was kept. The CLI exits with status 130."""
