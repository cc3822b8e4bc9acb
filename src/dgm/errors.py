"""Errors that a user can cause and fix; the CLI prints them as one sentence, no traceback."""


class DgmError(Exception):
    """A mistake in input, data or configuration: the message says what is wrong and what to do."""


class DivergenceError(DgmError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""
