"""MQTT plumbing: broker settings, the link, publishers and subscriptions."""
