"""The one exception type users see: a problem with their input, never a bug in convexp."""

from typer import TyperException


class ConvexpError(TyperException):
    """Bad input (config, data, paths, options). The CLI prints it as one line and exits 2.

    The message says what is wrong and how to fix it; it never needs a traceback. It is a
    Typer exception like Typer's own usage errors (unknown option, missing argument), so the
    command line reports both the same way.
    """

    exit_code = 2


class DiskFull(ConvexpError):
    """No space left while writing a run: every run after it would fail the same way, so a study stops."""
