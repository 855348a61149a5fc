"""The package version, in one place: pyproject.toml and pickles read it from here."""

__version__ = "0.1.0.dev0"
