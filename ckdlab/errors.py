"""One exception type for faults a user can fix.

A :class:`UserError` says what is wrong, where (the file, option or argument) and how to fix it.
The CLI prints its message as one paragraph and exits with status 2; notebooks show it as one
line (:func:`show_user_errors_in_ipython`). Any other exception is a bug in ckdlab and keeps its
traceback. It subclasses ``ValueError`` so that code catching bad values keeps working.

Modules that check user input raise :class:`UserError` themselves. Where a lower-level check
raises a plain ``ValueError`` about a value the user gave (a layer map, an objective name),
the caller that passed the value on wraps the call in :func:`user_input`, which re-raises it as a
:class:`UserError` naming the option.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class UserError(ValueError):
    """Bad input or state the user can fix; the message names it and the fix."""


@contextmanager
def user_input(option: str | None = None, errors: tuple[type[BaseException], ...] = (ValueError,)) -> Iterator[None]:
    """Inside the block, ``errors`` raised while checking a value the user gave become a
    :class:`UserError` (prefixed by ``option``, e.g. ``"--layer-map"``). Wrap only the checks of
    user input: an error there is the user's to fix, anywhere else it is a bug."""
    try:
        yield
    except UserError:
        raise
    except errors as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise UserError(f"{option}: {message}" if option else message) from err


def _one_line(shell: Any, etype: type[BaseException], value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython custom exception handler: a UserError is shown as its message, not a stack."""
    text = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, text)
    return text


def show_user_errors_in_ipython() -> bool:
    """Inside IPython/Jupyter, show every :class:`UserError` as ``UserError: <message>`` instead of a
    traceback (the cell still fails). Returns whether a handler was installed. Leaves a custom
    handler someone else installed alone."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    current = tuple(getattr(shell, "custom_exceptions", ()) or ())
    if current and current != (UserError,):
        return False
    shell.set_custom_exc((UserError,), _one_line)
    return True
