"""Echora server: a self-hostable chat backend in which files are first-class."""

__version__ = "0.1.0"
