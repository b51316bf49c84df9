"""``python -m service.cli``: the ``metarl`` command line."""

from service.cli import main

main()
