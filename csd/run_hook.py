"""How Claude Code runs csd's hook and statusLine command (launch's settings, the plugin's csd-hook):
``python -I -S csd/run_hook.py [--statusline]``.

Python compiles a script on every run but a module only once (into ``__pycache__``; pip does it at install),
so this stub, all that is compiled each time, imports csd/hook.py as a module and runs it: a millisecond or
two less per event (bench/: the hook against the bare interpreter). Standard library only; the hook's dir
goes at the end of ``sys.path``, so nothing in it can shadow the standard library.
"""

import sys

sys.path.append(__file__.rpartition("/")[0])
import hook  # noqa: E402  (csd/hook.py as a top-level module: nothing else of csd is loaded)

sys.exit(hook.main())
