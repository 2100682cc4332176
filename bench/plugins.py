"""Method plugins: modules named in ``BENCH_PLUGINS`` (comma-separated module names or ``.py`` paths) are imported
before a run, so that methods they register (``@register``) are available to ``bench run`` and to every worker
process of a parallel or Ray run, which imports the same plugins before running a unit."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from bench.errors import UsageError

_loaded: list[str] = []


def load_plugins(specs: list[str] | None = None) -> list[str]:
    """Import each plugin once (``specs`` default: ``$BENCH_PLUGINS``); returns every plugin loaded so far, to hand
    to worker processes."""
    if specs is None:
        specs = [s.strip() for s in os.environ.get("BENCH_PLUGINS", "").split(",") if s.strip()]
    for spec in specs:
        if spec.endswith(".py"):
            spec = str(Path(spec).resolve())
        if spec in _loaded:
            continue
        try:
            if spec.endswith(".py"):
                path = Path(spec)
                name = f"bench_plugin_{path.stem}"
                module_spec = importlib.util.spec_from_file_location(name, path)
                if module_spec is None or module_spec.loader is None or not path.is_file():
                    raise UsageError(f"BENCH_PLUGINS: {spec} is not a Python file")
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[name] = module
                module_spec.loader.exec_module(module)
            else:
                importlib.import_module(spec)
        except ImportError as e:
            raise UsageError(f"BENCH_PLUGINS: cannot import {spec} ({e})") from None
        except UsageError:
            raise
        except (Exception, SystemExit) as e:  # the plugin's own code raises or exits while it is imported
            if spec.endswith(".py"):  # a half-run module is not a plugin
                sys.modules.pop(f"bench_plugin_{Path(spec).stem}", None)
            what = f"it calls sys.exit({e.code!r})" if isinstance(e, SystemExit) else \
                f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
            raise UsageError(f"BENCH_PLUGINS: {spec} fails to import ({what})") from None
        _loaded.append(spec)
    return list(_loaded)
