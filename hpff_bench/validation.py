"""The checks every entry point shares: a value's type, range and finiteness, and paths.

Each check raises ConfigError with one line naming the value and what is allowed, so the CLI
turns it into exit 2 before anything is built. `NaN` never passes a range check (every
comparison with NaN is false, so checks are written as "must be finite, then in range").
Nothing here builds a model or touches a file: checks that need the model (a patch grid that
must divide every feature map, host memory, the device) are in hpff_bench.runner.preflight.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from hpff_bench.errors import ConfigError


def number(name: str, value, *, low: float | None = None, low_open: bool = False,
           high: float | None = None, allow_none: bool = False) -> None:
    """`value` is a finite real number (not a bool) within [low, high] ((low, high] if low_open)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number{_range(low, low_open, high)}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number{_range(low, low_open, high)}, got {value!r}")
    if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
        raise ConfigError(f"{name} must be{_range(low, low_open, high)}, got {value!r}")


def integer(name: str, value, *, low: int | None = None, high: int | None = None, allow_none: bool = False) -> None:
    """`value` is an int (not a bool, not a float) within [low, high]."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer{_range(low, False, high)}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{name} must be an integer{_range(low, False, high)}, got {value!r}")


def string(name: str, value, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")


def boolean(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def _range(low, low_open: bool, high) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" <= {high:g}"
    return ""


def output_dir(name: str, path) -> Path:
    """A directory the run may write into: it exists and is a writable directory, or it can be
    created (its first existing ancestor is a writable directory). Nothing is created here."""
    string(name, None if path is None else os.fspath(path))
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{name} {str(p)!r} is a file, not a directory; give a directory to write into")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(f"{name} {str(p)!r}: this directory is not writable")
        return p
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{name} {str(p)!r} cannot be created: {str(parent)!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{name} {str(p)!r} cannot be created: {str(parent)!r} is not writable")
    return p


def input_file(name: str, path) -> Path:
    """An existing, readable regular file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{name} {str(p)!r}: no such file")
    if p.is_dir():
        raise ConfigError(f"{name} {str(p)!r} is a directory; give a file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{name} {str(p)!r}: not readable")
    return p


def env_int(name: str, *, low: int = 1) -> int | None:
    """An environment variable holding an integer >= low (None when unset or empty)."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} must be an integer >= {low}") from None
    if value < low:
        raise ConfigError(f"environment variable {name}={text!r} must be an integer >= {low}")
    return value
