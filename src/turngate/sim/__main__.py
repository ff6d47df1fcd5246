"""``python -m turngate.sim``: see :mod:`turngate.sim.command`."""

import sys

from turngate.sim.command import main

sys.exit(main())
