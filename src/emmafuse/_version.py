"""The package version: the one copy (``pyproject.toml`` reads it, ``emmafuse.__version__`` re-exports it)."""

__version__ = "0.1.0"
