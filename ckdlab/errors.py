"""One exception type for faults a user can fix.

A :class:`UserError` says what is wrong, where (the file, option or argument) and how to fix it.
The CLI prints its message as one paragraph and exits with status 2; notebooks show it as one
line. Any other exception is a bug in ckdlab and keeps its traceback. It subclasses ``ValueError``
so that code catching bad values keeps working.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input or state the user can fix; the message names it and the fix."""
