"""The single exception type for data problems a user can fix."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with a dataset or an uploaded file.

    The message is a complete sentence addressed to the user (what is wrong, where, and how to fix it),
    so the dashboard can show it as is instead of a traceback.
    """
