"""The one exception type users see: a problem with their input, never a bug in convexp."""


class ConvexpError(Exception):
    """Bad input (config, data, paths, options). The CLI prints it as one line and exits 2.

    The message says what is wrong and how to fix it; it never needs a traceback. It knows
    nothing of the command line: convexp used as a library raises it like any exception, and
    cli.main maps it (and Typer's own usage errors) to one line and exit code 2.
    """

    exit_code = 2


class DiskFull(ConvexpError):
    """No space left while writing a run: every run after it would fail the same way, so a study stops."""
