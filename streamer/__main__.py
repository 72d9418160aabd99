"""``python -m streamer ...``: the same as the ``streamer`` console script."""

from .cli import main

main()
