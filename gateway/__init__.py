"""Lianfang: an edge gateway for shop-linked alarms."""

__version__ = "0.1.0"
