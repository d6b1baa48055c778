"""The one exception type for errors a user can cause.

The CLI prints its message on one line and exits non-zero; everything else is a bug and keeps its traceback.
"""


class ConnbenchError(Exception):
    """A problem the user can fix (missing binary, port taken, bad file...); the message says how."""
