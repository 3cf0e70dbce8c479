"""``python -m quantmedic.pipelines.cli``: the same as the ``quantmedic`` command."""

from quantmedic.pipelines.cli import main

main()
