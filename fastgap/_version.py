"""Single source of the fastgap version (read by the build and by artifacts)."""

__version__ = "0.1.0"
