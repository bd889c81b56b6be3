"""The base of every user-facing error (pure Python): a problem with the user's input, files or setup whose message
says what is wrong and what to do. ``affectllm`` commands print it as one line; any other exception is a bug and is
raised with its traceback."""

from __future__ import annotations


class UserError(ValueError):
    """A problem the user can fix (bad option, missing file, empty split); the message names it and the fix."""
