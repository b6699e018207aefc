"""Mammosearch: similar-case search for mammography."""

__version__ = "0.1.0"
