"""Allow ``python -m gateway``, the same as the ``lianfang`` console script."""

from gateway.cli import main

main()
