"""The plugin registry: names -> interchangeable plugins of five kinds.

Plugins arrive two ways and are first-class either way:

* entry points (``[project.entry-points."deepfm_bench.models"]`` etc.), which is how the built-ins and
  every third-party package declare theirs; discovered lazily, loaded only when asked for;
* ``@register(kind, name)`` in code, for a notebook or a script.

Usable from the REPL in one line, like timm::

    import registry
    registry.available("model")                 # ['autoint', 'deepfm', ...]
    model = registry.create("model", "deepfm", embedding=emb)

A plugin that fails to import is reported by name and does not take the others down; two plugins
claiming one name is an error naming both sources; an unknown name lists the known ones.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

KINDS: dict[str, str] = {
    "model": "deepfm_bench.models",
    "interaction": "deepfm_bench.interactions",
    "encoder": "deepfm_bench.encoders",
    "sampler": "deepfm_bench.samplers",
    "dataset": "deepfm_bench.datasets",
}


class RegistryError(LookupError):
    """Base class of every registry failure."""


class UnknownKindError(RegistryError):
    pass


class UnknownPluginError(RegistryError):
    pass


class DuplicatePluginError(RegistryError):
    pass


class PluginLoadError(RegistryError):
    pass


@dataclass
class _Candidate:
    """One claim on a name: a registered object or an entry point not yet loaded."""

    source: str  # distribution name, or the module that called @register
    target: str  # "module:attr", for messages and de-duplication
    obj: Any = None
    entry_point: metadata.EntryPoint | None = None
    error: BaseException | None = None

    def load(self) -> Any:
        if self.obj is None and self.error is None and self.entry_point is not None:
            try:
                self.obj = self.entry_point.load()
            except Exception as exc:  # a broken plugin must not take the registry down
                self.error = exc
        return self.obj


@dataclass(frozen=True)
class PluginInfo:
    """What `bench list` prints for one plugin."""

    kind: str
    name: str
    source: str
    target: str
    doc: str
    error: str | None = None


_registered: dict[str, dict[str, list[_Candidate]]] = {kind: {} for kind in KINDS}
_discovered: dict[str, dict[str, list[_Candidate]]] = {}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UnknownKindError(f"unknown plugin kind {kind!r}; known kinds: {', '.join(KINDS)}")


def _target_of(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def register(kind: str, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """Decorator registering a class or factory under `name` (and any aliases) for `kind`."""
    _check_kind(kind)

    def decorate(obj: Any) -> Any:
        for each in (name, *aliases):
            claims = _registered[kind].setdefault(each, [])
            target = _target_of(obj)
            if any(c.obj is obj for c in claims):
                continue
            if claims:
                raise DuplicatePluginError(
                    f"{kind} {each!r} is claimed twice: by {claims[0].target} and by {target}"
                )
            claims.append(_Candidate(source=obj.__module__, target=target, obj=obj))
        return obj

    return decorate


def _entry_points(kind: str) -> dict[str, list[_Candidate]]:
    """Entry points of one kind, discovered once; nothing is imported here."""
    if kind not in _discovered:
        found: dict[str, list[_Candidate]] = {}
        for ep in metadata.entry_points(group=KINDS[kind]):
            dist = getattr(ep, "dist", None)
            source = dist.metadata["Name"] if dist is not None else "?"
            claims = found.setdefault(ep.name, [])
            if not any(c.target == ep.value for c in claims):
                claims.append(_Candidate(source=source, target=ep.value, entry_point=ep))
        _discovered[kind] = found
    return _discovered[kind]


def refresh() -> None:
    """Forget discovered entry points (after installing a plugin package in this process)."""
    _discovered.clear()
    metadata_cache_clear = getattr(metadata, "_cache_clear", None)
    if callable(metadata_cache_clear):
        metadata_cache_clear()


def _claims(kind: str, name: str) -> list[_Candidate]:
    return _registered[kind].get(name, []) + _entry_points(kind).get(name, [])


def available(kind: str, pattern: str | None = None) -> list[str]:
    """Sorted names of one kind, optionally filtered by a shell pattern (``'*fm'``)."""
    _check_kind(kind)
    names = set(_registered[kind]) | set(_entry_points(kind))
    if pattern:
        names = {n for n in names if fnmatch.fnmatch(n, pattern)}
    return sorted(names)


def get(kind: str, name: str) -> Any:
    """The plugin object (usually a class) registered as `name`."""
    _check_kind(kind)
    claims = _claims(kind, name)
    if not claims:
        known = available(kind)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownPluginError(
            f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known) or '(none)'}"
        )
    objects = []
    for claim in claims:
        obj = claim.load()
        if claim.error is not None:
            raise PluginLoadError(
                f"{kind} {name!r} from {claim.source} ({claim.target}) failed to load: "
                f"{type(claim.error).__name__}: {claim.error}"
            ) from claim.error
        if not any(obj is o for o in objects):
            objects.append(obj)
    if len(objects) > 1:
        sources = " and ".join(f"{c.source} ({c.target})" for c in claims)
        raise DuplicatePluginError(f"{kind} {name!r} is claimed by two plugins: {sources}")
    return objects[0]


_renamed: dict[tuple[type, str], type] = {}


def _named(obj: Any, name: str) -> Any:
    """A plugin class that reports itself by a `name` attribute (samplers, encoders, datasets) reports the
    name it was created by: a subclass of `popularity` registered as `hard-pop` says "hard-pop sampler: ..."
    in its errors, not "popularity sampler". A thin subclass, made once per (class, name)."""
    if not isinstance(obj, type) or not isinstance(getattr(obj, "name", None), str) or obj.name == name:
        return obj
    if (obj, name) not in _renamed:
        _renamed[obj, name] = type(obj.__name__, (obj,), {"name": name, "__module__": obj.__module__,
                                                          "__qualname__": obj.__qualname__, "__doc__": obj.__doc__})
    return _renamed[obj, name]


def create(kind: str, name: str, **kwargs: Any) -> Any:
    """Instantiate a plugin: ``create("sampler", "uniform", num_negatives=4)``."""
    return _named(get(kind, name), name)(**kwargs)


def describe(kind: str | None = None) -> list[PluginInfo]:
    """Every plugin (of one kind, or all) with its source and one-line doc; broken ones carry `error`."""
    kinds = [kind] if kind else list(KINDS)
    rows = []
    for k in kinds:
        _check_kind(k)
        for name in available(k):
            claims = _claims(k, name)
            source = ", ".join(dict.fromkeys(c.source for c in claims))
            target = claims[0].target
            try:
                obj = get(k, name)
                doc = (inspect.getdoc(obj) or "").strip().splitlines()
                rows.append(PluginInfo(k, name, source, target, doc[0] if doc else ""))
            except RegistryError as exc:
                cause = exc.__cause__ if isinstance(exc, PluginLoadError) and exc.__cause__ else None
                error = f"{type(cause).__name__}: {cause}" if cause else str(exc)  # the failure itself, short
                rows.append(PluginInfo(k, name, source, target, "", error=error))
    return rows


def search_space(kind: str, name: str, trial: Any) -> dict[str, Any]:
    """The plugin's own Optuna search space (``search_space(trial) -> dict``), or {} if it declares none."""
    space = getattr(get(kind, name), "search_space", None)
    return dict(space(trial)) if callable(space) else {}
