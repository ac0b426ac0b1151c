"""User-facing errors.

Anything the user can fix (bad path, bad flag, corrupt file) raises `UserError` with a
single line that says what is wrong and what to do. The CLI prints it without a traceback
(unless --debug) and exits with status 2.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one clear line."""

    def __init__(self, message: str):
        super().__init__(message.strip().splitlines()[0] if message.strip() else message)


def quote(e: BaseException, limit: int = 300) -> str:
    """A library's error text for our one-line messages: its first sentence, whole.

    Only a sentence longer than `limit` is shortened, at a word boundary, with "...".
    """
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    for end in (". ", "; "):
        cut = text.find(end)
        if cut > 0:
            text = text[:cut + 1].rstrip(";")
            break
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return text
