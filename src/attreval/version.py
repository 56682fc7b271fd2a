"""The package version (one place: ``attreval.__version__``, run metadata)."""

__version__ = "0.1.0"
