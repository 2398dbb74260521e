"""The one exception type users see: a problem with their input, never a bug in convexp."""


class ConvexpError(Exception):
    """Bad input (config, data, paths, options). The CLI prints it as one line and exits 2.

    The message says what is wrong and how to fix it; it never needs a traceback. It knows
    nothing of the command line: convexp used as a library raises it like any exception, and
    cli.main maps it (and Typer's own usage errors) to one line and exit code 2.
    """

    exit_code = 2

    def __init__(self, message: object = ""):
        super().__init__(cut(str(message)))


MAX_MESSAGE = 1000  # characters; the fix comes last, so a long message keeps its end


def cut(message: str, limit: int = MAX_MESSAGE) -> str:
    """One line a terminal can show: a value echoed in full (a config's aliases expanded, a long
    path) is cut in its middle, keeping what is wrong (the start) and how to fix it (the end)."""
    if len(message) <= limit:
        return message
    head, tail = message[: limit * 2 // 3], message[-limit // 3:]
    return f"{head} [... {len(message) - len(head) - len(tail):,} characters ...] {tail}"


def shown(value: object, limit: int = 200) -> str:
    """repr(value) as an error echoes it: at most `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class DiskFull(ConvexpError):
    """No space left while writing a run: every run after it would fail the same way, so a study stops."""


class Diverged(ConvexpError):
    """The training loss became inf or NaN: an answer about the values trained with (a search
    records it as such), not a fault in the set-up."""


class UnusableCheckpoint(ConvexpError):
    """A checkpoint that cannot be resumed from (empty, truncated, a key missing, another model).
    The run is no worse than before the resume: lifecycle.open_run leaves its status as it was.
    A study stops at it (the user moves the file aside), wherever its child trained."""


# What stops a whole study when one of its children meets it, wherever the child trains: a worker
# process sends the error itself back to the study, which raises it (on Ray only an unusable
# checkpoint does: a Ray worker's full disk is its node's scratch space, not the study's disk).
STOPS_THE_STUDY = (DiskFull, UnusableCheckpoint)
