"""The plugin registry: names -> interchangeable plugins of six kinds.

Plugins arrive two ways and are first-class either way:

* entry points (``[project.entry-points."deepfm_bench.models"]`` etc.), which is how the built-ins and
  every third-party package declare theirs; discovered lazily, loaded only when asked for;
* ``@register(kind, name)`` in code, for a notebook or a script.

Usable from the REPL in one line, like timm::

    import registry
    registry.available("model")                 # ['autoint', 'deepfm', ...]
    model = registry.create("model", "deepfm", spec=data.spec, embed_dim=16)

A plugin that fails to import is reported by name and does not take the others down; two plugins
claiming one name is an error naming both sources; an unknown name lists the known ones. Each kind has a
declared contract (`CONTRACTS`: a function listing what an object lacks), checked on every `create`,
so a plugin that does not meet it fails at once with what is missing. The module-level functions work on
one `Registry`; `registry.isolated()` lets a test register plugins that vanish when it ends.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

KINDS: dict[str, str] = {
    "model": "deepfm_bench.models",
    "interaction": "deepfm_bench.interactions",
    "encoder": "deepfm_bench.encoders",
    "sampler": "deepfm_bench.samplers",
    "dataset": "deepfm_bench.datasets",
    "history_encoder": "deepfm_bench.history_encoders",
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


class PluginContractError(RegistryError):
    """A created plugin does not meet its kind's contract."""


class PluginFailedError(RegistryError):
    """A plugin raised something unexpected while it was created or used (a bug in the plugin, not bad input)."""


# kind -> "module:function" returning what an object lacks of the kind's contract (imported when first used)
CONTRACTS: dict[str, str] = {
    "model": "bench.nn.model:check_model",
    "interaction": "bench.nn.interaction:check_interaction",
    "encoder": "bench.data.encoding:check_encoder",
    "sampler": "bench.data.base:check_sampler",
    "dataset": "bench.data.base:check_dataset",
    "history_encoder": "bench.nn.history:check_history_encoder",
}


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
            except (Exception, SystemExit) as exc:  # a broken plugin (even one calling sys.exit on import)
                self.error = exc  # must not take the registry, or the command, down
            else:
                if not callable(self.obj):
                    self.error = TypeError(f"{self.target} is a {type(self.obj).__name__}, not a class or factory")
                    self.obj = None
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


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UnknownKindError(f"unknown plugin kind {kind!r}; known kinds: {', '.join(KINDS)}")


def _target_of(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _contract(kind: str) -> Callable[[Any], list[str]]:
    module, _, function = CONTRACTS[kind].partition(":")
    return getattr(importlib.import_module(module), function)


class Registry:
    """Names -> plugins for each kind: registered in code, or discovered as entry points."""

    def __init__(self) -> None:
        self._registered: dict[str, dict[str, list[_Candidate]]] = {kind: {} for kind in KINDS}
        self._discovered: dict[str, dict[str, list[_Candidate]]] = {}
        self._renamed: dict[tuple[type, str], type] = {}

    def register(self, kind: str, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[Any], Any]:
        """Decorator registering a class or factory under `name` (and any aliases) for `kind`."""
        _check_kind(kind)

        def decorate(obj: Any) -> Any:
            for each in (name, *aliases):
                claims = self._registered[kind].setdefault(each, [])
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

    def unregister(self, kind: str, name: str) -> None:
        """Forget a plugin registered in code (entry points stay: they belong to installed packages)."""
        _check_kind(kind)
        if self._registered[kind].pop(name, None) is None:
            raise UnknownPluginError(f"no {kind} {name!r} was registered in code")

    @contextmanager
    def isolated(self) -> Iterator["Registry"]:
        """Registrations made inside the block are undone when it ends (for tests and notebooks)."""
        saved = {kind: {name: list(claims) for name, claims in names.items()}
                 for kind, names in self._registered.items()}
        try:
            yield self
        finally:
            self._registered = saved

    def _entry_points(self, kind: str) -> dict[str, list[_Candidate]]:
        """Entry points of one kind, discovered once; nothing is imported here."""
        if kind not in self._discovered:
            found: dict[str, list[_Candidate]] = {}
            for ep in metadata.entry_points(group=KINDS[kind]):
                dist = getattr(ep, "dist", None)
                source = dist.metadata["Name"] if dist is not None else "?"
                claims = found.setdefault(ep.name, [])
                if not any(c.target == ep.value for c in claims):
                    claims.append(_Candidate(source=source, target=ep.value, entry_point=ep))
            self._discovered[kind] = found
        return self._discovered[kind]

    def _claims(self, kind: str, name: str) -> list[_Candidate]:
        return self._registered[kind].get(name, []) + self._entry_points(kind).get(name, [])

    def available(self, kind: str, pattern: str | None = None) -> list[str]:
        """Sorted names of one kind, optionally filtered by a shell pattern (``'*fm'``)."""
        _check_kind(kind)
        names = set(self._registered[kind]) | set(self._entry_points(kind))
        if pattern:
            names = {n for n in names if fnmatch.fnmatch(n, pattern)}
        return sorted(names)

    def get(self, kind: str, name: str) -> Any:
        """The plugin object (usually a class) registered as `name`."""
        _check_kind(kind)
        claims = self._claims(kind, name)
        if not claims:
            known = self.available(kind)
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

    def _named(self, obj: Any, name: str) -> Any:
        """A plugin class that reports itself by a `name` attribute (samplers, encoders, datasets) reports the
        name it was created by: a subclass of `popularity` registered as `hard-pop` says "hard-pop sampler:
        ..." in its errors, not "popularity sampler". A thin subclass, made once per (class, name)."""
        if not isinstance(obj, type) or not isinstance(getattr(obj, "name", None), str) or obj.name == name:
            return obj
        if (obj, name) not in self._renamed:
            self._renamed[obj, name] = type(obj.__name__, (obj,), {
                "name": name, "__module__": obj.__module__, "__qualname__": obj.__qualname__, "__doc__": obj.__doc__})
        return self._renamed[obj, name]

    def origin(self, kind: str, name: str) -> str:
        """Where a plugin comes from, for messages: "model 'foo' from foo-models (foo_models.model:Foo)"."""
        claims = self._claims(kind, name)
        if not claims:
            return f"{kind} {name!r}"
        return f"{kind} {name!r} from {claims[0].source} ({claims[0].target})"

    def create(self, kind: str, name: str, **kwargs: Any) -> Any:
        """Instantiate a plugin and check it meets its kind's contract:
        ``create("sampler", "uniform", num_negatives=4)``.

        ValueError and TypeError from the constructor pass through (a plugin refusing its options: the caller
        names the option); anything else it raises is a PluginFailedError naming the plugin and its source."""
        factory = self._named(self.get(kind, name), name)
        try:
            made = factory(**kwargs)
        except (ValueError, TypeError, RegistryError):
            raise
        except Exception as exc:
            raise PluginFailedError(f"{self.origin(kind, name)} failed when created: {type(exc).__name__}: "
                                    f"{exc}") from exc
        missing = _contract(kind)(made)
        if missing:
            target = self._claims(kind, name)[0].target
            raise PluginContractError(f"{kind} {name!r} ({target}) does not meet the {kind} contract: it needs "
                                      + "; ".join(missing))
        return made

    def describe(self, kind: str | None = None) -> list[PluginInfo]:
        """Every plugin (of one kind, or all) with its source and one-line doc; broken ones carry `error`."""
        kinds = [kind] if kind else list(KINDS)
        rows = []
        for k in kinds:
            _check_kind(k)
            for name in self.available(k):
                claims = self._claims(k, name)
                source = ", ".join(dict.fromkeys(c.source for c in claims))
                target = claims[0].target
                try:
                    obj = self.get(k, name)
                    doc = (inspect.getdoc(obj) or "").strip().splitlines()
                    rows.append(PluginInfo(k, name, source, target, doc[0] if doc else ""))
                except RegistryError as exc:
                    cause = exc.__cause__ if isinstance(exc, PluginLoadError) and exc.__cause__ else None
                    error = f"{type(cause).__name__}: {cause}" if cause else str(exc)  # the failure itself, short
                    rows.append(PluginInfo(k, name, source, target, "", error=error))
        return rows

    def defaults(self, kind: str, name: str) -> dict[str, Any]:
        """The plugin's constructor options that have a default, with it: what it is built with when unset."""
        parameters = inspect.signature(self.get(kind, name)).parameters
        return {n: p.default for n, p in parameters.items() if p.default is not inspect.Parameter.empty}

    def search_space(self, kind: str, name: str, trial: Any) -> dict[str, Any]:
        """The plugin's own Optuna search space (``search_space(trial) -> dict``), or {} if it declares none."""
        space = getattr(self.get(kind, name), "search_space", None)
        return dict(space(trial)) if callable(space) else {}


REGISTRY = Registry()
register = REGISTRY.register
unregister = REGISTRY.unregister
isolated = REGISTRY.isolated
available = REGISTRY.available
get = REGISTRY.get
create = REGISTRY.create
describe = REGISTRY.describe
origin = REGISTRY.origin
search_space = REGISTRY.search_space
defaults = REGISTRY.defaults
