"""The one exception type users see: a problem with their input, never a bug in convexp."""


class ConvexpError(Exception):
    """Bad input (config, data, paths, options). The CLI prints it as one line and exits 2.

    The message says what is wrong and how to fix it; it never needs a traceback.
    """
