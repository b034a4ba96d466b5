"""The ``lianfang`` command line, one module per command group."""
