"""Policies, rewards and workloads from outside scalelab.

A config names one in either of two ways:

- ``package.module:Name``: imported from ``sys.path``, the config file's folder or the
  current directory (a researcher's ``mypolicies.py`` beside the YAML:
  ``name: mypolicies:P95Band``);
- a plain name that an installed distribution declares under an entry-point group:
  ``scalelab.policies``, ``scalelab.rewards`` or ``scalelab.workloads``::

      [project.entry-points."scalelab.policies"]
      p95-band = "mypkg.policies:P95Band"

Everything loaded is recorded (:func:`imported`): a run folder keeps it in
``plugins.json`` and :func:`restore` puts the same folders back on ``sys.path``, so a
``--resume`` or a ``report`` of the folder finds the same code.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from importlib import metadata
from pathlib import Path

from scalelab.errors import UserError

GROUPS = {"policy": "scalelab.policies", "reward": "scalelab.rewards", "workload": "scalelab.workloads"}

_search: list[str] = []
_loaded: dict[str, dict] = {}


class PluginError(UserError):
    """A plugin that cannot be imported or is not what its config key expects."""


def is_import_path(name: object) -> bool:
    """``package.module:Name`` (a colon between two identifiers' paths)."""
    if not isinstance(name, str) or name.count(":") != 1:
        return False
    module, attr = name.split(":")
    return all(p.isidentifier() for p in module.split(".")) and all(p.isidentifier() for p in attr.split("."))


def add_search_dir(path: str | Path) -> None:
    """Also look for ``module:Name`` modules in ``path`` (the config file's folder)."""
    p = str(Path(path).resolve())
    if p not in _search:
        _search.append(p)


def _import_module(module: str, what: str, spec: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0] and exc.name != module:
            raise PluginError(f"{what} {spec!r}: importing {module!r} failed: {exc}") from None
    for folder in [*_search, str(Path.cwd())]:
        if (Path(folder) / (module.split(".")[0] + ".py")).is_file() or (Path(folder) / module.split(".")[0]).is_dir():
            if folder not in sys.path:
                sys.path.append(folder)
            return importlib.import_module(module)
    where = ", ".join([*_search, str(Path.cwd())])
    raise PluginError(f"{what} {spec!r}: no module named {module!r} on sys.path or in {where}; put the file "
                      f"beside the config or install its package") from None


def load_object(spec: str, what: str) -> object:
    """The object ``package.module:Name`` names; ``what`` (policy, reward, workload)
    is for messages. Recorded in :func:`imported`."""
    module_name, attr = spec.split(":")
    try:
        module = _import_module(module_name, what, spec)
    except PluginError:
        raise
    except Exception as exc:  # the plugin's own module raised while importing
        raise PluginError(f"{what} {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PluginError(f"{what} {spec!r}: module {module_name!r} has no {part!r}{hint}")
        obj = getattr(obj, part)
    file = getattr(module, "__file__", None)
    _loaded[spec] = {"kind": what, "module": module_name, "file": file,
                     "dir": _root_dir(file, module_name) if file else None, "source": "import path"}
    return obj


def _root_dir(file: str, module: str) -> str:
    """The sys.path entry the module was found under."""
    p = Path(file).resolve().parent
    for _ in range(module.count(".") + (1 if Path(file).name == "__init__.py" else 0)):
        p = p.parent
    return str(p)


def entry_points(what: str) -> dict[str, metadata.EntryPoint]:
    """Installed plug-ins of one kind: entry points of ``GROUPS[what]`` by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUPS[what])}


def load_entry_point(name: str, what: str) -> object | None:
    """The object an installed distribution declares as ``name`` in ``GROUPS[what]``;
    None if none does."""
    ep = entry_points(what).get(name)
    if ep is None:
        return None
    try:
        obj = ep.load()
    except Exception as exc:
        raise PluginError(f"{what} {name!r} (entry point {ep.value!r} of {GROUPS[what]}): loading it raised "
                          f"{type(exc).__name__}: {exc}") from None
    dist = getattr(ep, "dist", None)
    _loaded[name] = {"kind": what, "module": ep.module, "file": getattr(sys.modules.get(ep.module), "__file__", None),
                     "dir": None, "source": f"entry point {GROUPS[what]}",
                     "distribution": f"{dist.name} {dist.version}" if dist else None}
    return obj


def find_file(name: str | Path, what: str) -> Path:
    """A data file a config names (a trained model): as given, else in the config's
    folder or a restored run's (:func:`restore`). Recorded in :func:`imported`."""
    p = Path(name)
    candidates = [p] if p.is_absolute() else [p, *(Path(d) / p for d in _search)]
    for c in candidates:
        if c.is_file():
            found = c.resolve()
            _loaded[str(name)] = {"kind": what, "module": None, "file": str(found), "dir": str(found.parent),
                                  "source": "file"}
            return found
    where = ", ".join(str(c) for c in candidates)
    raise PluginError(f"{what} {str(name)!r}: no such file (looked at {where})")


def imported() -> dict[str, dict]:
    """What was loaded from outside scalelab, by the name the config used."""
    return {k: dict(v) for k, v in _loaded.items()}


def restore(record: dict[str, dict]) -> None:
    """Make the modules of a run folder's ``plugins.json`` importable again: their
    folders go back on the search path."""
    for entry in record.values():
        if entry.get("dir"):
            add_search_dir(entry["dir"])
            if entry["dir"] not in sys.path:
                sys.path.append(entry["dir"])
