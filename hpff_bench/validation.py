"""The checks every entry point shares: a value's type, range and finiteness, and paths.

Each check raises ConfigError with one line naming the value and what is allowed, so the CLI
turns it into exit 2 before anything is built. `NaN` never passes a range check (every
comparison with NaN is false, so checks are written as "must be finite, then in range").
Nothing here builds a model, and only `create_dir` touches a file (it is called once the input
is known good): checks that need the model (a patch grid that must divide every feature map,
host memory, the device) are in hpff_bench.runner.preflight.

Upper bounds: a number is refused where the run could not represent it or never finish, so
a typo (a twenty-digit --steps) is an exit-2 line, not a run that never ends:
- seeds: 0 .. 2**32 - 1 (what numpy takes; training derives per-epoch seeds as
  seed x 100,003 + epoch, which must stay within torch's 64-bit generator seed);
- measured steps and warm-up steps: at most 10**6 (a million steps of 0.1 s is 28 hours);
- epochs: at most 10**4 (the papers train 160 to 400);
- image size: at most 2**16 pixels a side (a 65,536 x 65,536 RGB input is 48 GiB per image in fp32);
- classes: at most 10**6 (ImageNet-21k has 21,841);
- images (batch size, training and test subsets): at most 2**31 - 1 (a 32-bit index);
- DataLoader workers: at most 256;
- memory sizes (--budget, --cuda-context-bytes): at most 1 PiB (2**50 B);
- seconds (--timeout): at most a year.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from hpff_bench.errors import ConfigError

MAX_SEED = 2**32 - 1
MAX_STEPS = 10**6
MAX_EPOCHS = 10**4
MAX_IMAGE_SIZE = 2**16
MAX_CLASSES = 10**6
MAX_IMAGES = 2**31 - 1
MAX_WORKERS = 256
MAX_BYTES = 2**50
MAX_SECONDS = 365 * 24 * 3600


def number(name: str, value, *, low: float | None = None, low_open: bool = False,
           high: float | None = None, allow_none: bool = False) -> None:
    """`value` is a finite real number (not a bool) within [low, high] ((low, high] if low_open)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number{_range(low, low_open, high)}, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number{_range(low, low_open, high)}, got {shown(value)}")
    if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
        raise ConfigError(f"{name} must be{_range(low, low_open, high)}, got {shown(value)}")


def integer(name: str, value, *, low: int | None = None, high: int | None = None, allow_none: bool = False) -> None:
    """`value` is an int (not a bool, not a float) within [low, high]."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer{_range(low, False, high)}, got {shown(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{name} must be an integer{_range(low, False, high)}, got {shown(value)}")


def natural(text: str) -> int | None:
    """The integer >= 0 that `text` spells in ASCII digits (at most 18 of them, so it fits 64
    bits), else None. str.isdigit() alone also passes '²', which int() refuses."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def string(name: str, value, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {shown(value)}")


def boolean(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {shown(value)}")


def _range(low, low_open: bool, high) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{_num(low)}, {_num(high)}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {_num(low)}"
    if high is not None:
        return f" <= {_num(high)}"
    return ""


def _num(v) -> str:
    """A bound as the user would type it: integers exactly, floats short."""
    return str(v) if isinstance(v, int) else f"{v:g}"


def shown(value, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters (a 4,000-digit number stays one readable line)."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4,300-digit str() limit
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else f"{text[:limit - 15]}...({len(text)} chars)"


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


def create_dir(name: str, path) -> Path:
    """Create the output directory `path` (and its missing parents), once the input is known good.

    A directory that cannot be created although `output_dir` allowed it (below /proc for root,
    a full disk, a read-only mount) is a ConfigError naming it; the parents this call created
    are removed again, so a refused run leaves nothing behind."""
    p = Path(path)
    missing = []
    q = p.absolute()
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        for d in missing:  # deepest first
            try:
                d.rmdir()
            except OSError:
                pass
        raise ConfigError(f"{name} {str(p)!r} cannot be created: {e.strerror or e}") from None
    return p
