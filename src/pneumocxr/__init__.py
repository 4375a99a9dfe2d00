"""pneumocxr: train, evaluate, explain and serve chest X-ray classifiers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pneumocxr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
