"""User-facing errors.

Anything the user can fix (bad path, bad flag, corrupt file) raises `UserError` with a
single line that says what is wrong and what to do. The CLI prints it without a traceback
(unless --debug) and exits with status 2.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one clear line."""

    def __init__(self, message: str):
        super().__init__(message.strip().splitlines()[0] if message.strip() else message)


class Problems(UserError):
    """Several UserErrors found together (every flag is checked before a run stops): the CLI
    prints one `rwkvft: error:` line for each, so one run shows everything to fix."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        Exception.__init__(self, self.lines[0])


class Checks:
    """Runs independent checks, keeping every UserError instead of stopping at the first.

    One problem per flag: a line that starts with a flag already reported (`--chunk_ctx must be
    positive` then `--chunk_ctx 0 with --ctx_len 256: ...`) is the same mistake seen by a later
    check, so only the first is kept."""

    def __init__(self):
        self.lines: list[str] = []

    def run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs), or None after recording its UserError(s)."""
        try:
            return fn(*args, **kwargs)
        except Problems as e:
            for line in e.lines:
                self.add(line)
        except UserError as e:
            self.add(str(e))
        return None

    def add(self, message: str) -> None:
        flag = _leading_flag(message)
        if flag is None or flag not in map(_leading_flag, self.lines):
            self.lines.append(message)

    def raise_if_any(self) -> None:
        if len(self.lines) == 1:
            raise UserError(self.lines[0])
        if self.lines:
            raise Problems(self.lines)


def _leading_flag(line: str) -> str | None:
    """`--name` when the line starts with a flag (`--name ...`, `--name: ...`), else None."""
    word = line.split(" ", 1)[0].rstrip(":,")
    return word if word.startswith("--") and len(word) > 2 else None


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
