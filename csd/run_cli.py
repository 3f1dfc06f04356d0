"""How a worker's shim runs csd: ``python -S -P csd/run_cli.py ARGS`` (csd.workers.write_shim).

Without ``site``: csd's commands that a controller runs in a loop (send, converse, wait-for-turn, status) use the
standard library and csd only, and ``site`` costs a few ms of every start-up (~15 ms with an editable install's
finder, bench/). csd's own dir goes at the end of ``sys.path`` (nothing in it can shadow the standard library),
and the first import that nothing on that path provides runs ``site.main()`` then and there: the site-packages
dirs, ``.pth`` files and the user's site are then exactly what the console script would have had."""

import sys


class _SiteOnDemand:
    """Last on ``sys.meta_path``: asked only for a module no other finder has; runs ``site.main()`` once."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):  # noqa: ANN001, ANN206
        if path is not None or name in sys.stdlib_module_names:
            return None  # a submodule, or an optional standard module this platform lacks (ntpath's "nt")
        sys.meta_path.remove(cls)
        import site

        site.main()
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                return spec
        return None


sys.path.append(__file__.rpartition("/")[0].rpartition("/")[0] or "/")
sys.meta_path.append(_SiteOnDemand)
sys.argv[0] = "csd"
from csd.__main__ import entry  # noqa: E402

entry()
