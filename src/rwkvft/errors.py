"""User-facing errors.

Anything the user can fix (bad path, bad flag, corrupt file) raises `UserError` with a
single line that says what is wrong and what to do. The CLI prints it without a traceback
(unless --debug) and exits with status 2.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one clear line."""

    def __init__(self, message: str):
        super().__init__(message.strip().splitlines()[0] if message.strip() else message)
