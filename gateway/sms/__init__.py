"""SMS through a GSM/4G modem: the AT port, the wording, the service the gateway runs."""
