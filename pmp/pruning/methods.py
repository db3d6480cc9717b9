"""Imports the built-in methods so that they register themselves in `base.METHODS`."""

from . import lottery, magnitude, mrmp, pmp, snip  # noqa: F401
