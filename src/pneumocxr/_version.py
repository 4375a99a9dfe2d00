"""``__version__``: the installed package's version (pyproject's ``version``).

Its own module so that every layer can read it without importing the top-level package, whose
public names point up into ``pneumocxr.api``."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pneumocxr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
