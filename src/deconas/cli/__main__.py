"""``python -m deconas.cli`` (what torchrun launches): the ``deconas`` command."""

import sys

from deconas.cli import main

sys.exit(main())
