"""Lianfang: an edge gateway for shop-linked alarms."""

from datetime import date

__version__ = "0.1.0"

RELEASE_DATE = date(2026, 11, 22)
"""The day this version was cut: a clock that reads earlier is wrong. Bump it with the version."""
