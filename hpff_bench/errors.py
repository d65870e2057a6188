"""Errors the CLI turns into one clear line and exit code 2."""


class ConfigError(ValueError):
    """A bad option value: the message names the value and what is allowed."""
