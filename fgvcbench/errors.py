"""Errors a user can act on.

A :class:`UserError` is printed by the CLI as one line (no traceback) and exits with
code 2. Its message says what is wrong *and* what to do about it.
"""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Bad input: a suite, a path, a name. Printed as one line; exit code 2."""


class SuiteError(UserError):
    """A suite file is invalid. Names the file, the line and the key."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None, hint: str | None = None):
        self.file, self.line, self.key, self.hint = file, line, key, hint
        self.bare_message = message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        what = f"{key}: {message}" if key else message
        super().__init__(where + what + (f" — {hint}" if hint else ""))


class DataError(UserError):
    """A dataset cannot be found or read: the message names the path and the expected layout."""


class PluginError(Exception):
    """A plugin's own code raised (a backbone's ``create``): the message names the plugin,
    what it was called for and the exception; a failed run's record keeps the cause's traceback."""


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite. The run is recorded as ``diverged``."""


def kind_of(value: Any) -> str:
    """``None``, or ``a float`` / ``an ImageList``: what a wrong value was, for a message."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def yaml_number_hint(value: object, want_int: bool) -> str:
    """`` (YAML reads 1e-4 as text: write 0.0001)`` where a YAML 1.1 loader left a number in
    exponent form without a dot as a string; "" otherwise."""
    import re
    if not isinstance(value, str) or not re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
        return ""
    import math
    number = float(value)
    if not math.isfinite(number):   # 1e400: no float holds it, so no setting can take it
        return f" (YAML reads {value.strip()} as text, and it is beyond any float: write a smaller number)"
    meant = str(int(number)) if want_int and number.is_integer() else repr(number)
    return f" (YAML reads {value.strip()} as text: write {meant})"


def first_line(exc: BaseException, limit: int = 160) -> str:
    """``KeyError: 'x'``, or the first line of a long message (terminal colours removed),
    at most ``limit`` characters of it: an exception from a library, fit for a one-line error."""
    import re
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:limit]}" if text else exc.__class__.__name__


def yaml_text(value: Any) -> str:
    """``value`` as a suite would spell it: ``true``, ``null``, ``[base, cosine]``, ``'1'``
    (not Python's ``True``, ``None``, ``['base', 'cosine']``)."""
    import yaml
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, allow_unicode=True).strip()
    except yaml.YAMLError:
        return repr(value)
    return text[:-3].strip() if text.endswith("\n...") else text


def given_text(value: Any) -> str:
    """A value a user gave, in an error: text quoted (``'five'``, so it reads as the string
    it is), anything else as YAML spells it (:func:`yaml_text`)."""
    return repr(value) if isinstance(value, str) else yaml_text(value)
