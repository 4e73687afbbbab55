"""Foodies payment service; `__version__` is the installed distribution's version (pyproject.toml)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("foodies-payment")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
