"""Benchmarks: the gateway against a bare MQTT relay as the floor (``python -m bench.latency``)."""
