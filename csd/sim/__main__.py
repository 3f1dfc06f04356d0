"""``python -m csd.sim``: the simulated worker, as the ``csd-simworker`` console script runs it."""

import sys

from csd.sim.main import main

sys.exit(main())
