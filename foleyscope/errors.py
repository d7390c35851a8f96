"""User-facing errors: one line, no traceback, exit code 2 (see cli.main)."""


class FoleyscopeError(Exception):
    """A problem with the user's input or environment that we can explain in one line."""


class MediaError(FoleyscopeError):
    """The input file is missing, not media, truncated, or uses something we cannot decode."""
