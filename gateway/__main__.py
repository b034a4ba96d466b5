"""Allow ``python -m gateway``, the same as the ``lianfang`` console script."""

from gateway.cli.launch import main

main()
