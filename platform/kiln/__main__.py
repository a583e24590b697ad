"""``python -m kiln``: the CLI, for when the ``kiln`` script is not on PATH."""

from kiln.cli.main import main

main()
