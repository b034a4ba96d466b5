"""Runnable device-side simulators of every protocol the gateway speaks."""
