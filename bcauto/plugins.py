"""The plugin manager: entry-point loading, the component registries, and what ``bcauto plugins`` lists.

Built-in components are ordinary plugins listed in bcauto's own ``bcauto`` entry-point group, so they load
through exactly the path a third-party package takes. ``BCAUTO_DISABLE_PLUGINS`` (comma-separated entry-point
or package names) skips plugins; a plugin that fails to import is reported with its package and skipped,
so one broken package never takes the others down.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from bcauto import hookspecs
from bcauto.errors import BcautoError
from bcauto.registry import Provider, Registry
from bcauto.specs import AugmentationSpec, BackboneSpec, CanonicalizerSpec, DatasetSpec, ImbalanceSpec, ShiftSpec

ENTRY_POINT_GROUP = "bcauto"
DISABLE_ENV = "BCAUTO_DISABLE_PLUGINS"

# hook name -> (registry kind, spec type)
HOOKS = {
    "register_backbones": ("backbone", BackboneSpec),
    "register_augmentations": ("augmentation", AugmentationSpec),
    "register_canonicalizers": ("canonicalizer", CanonicalizerSpec),
    "register_imbalance_strategies": ("imbalance strategy", ImbalanceSpec),
    "register_datasets": ("dataset", DatasetSpec),
    "register_shifts": ("shift", ShiftSpec),
}


@dataclass
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    entry_point: str
    package: str
    error: str


@dataclass
class Components:
    """Every registered component, by kind, plus the plugins that failed to load."""

    backbones: Registry
    augmentations: Registry
    imbalance: Registry
    datasets: Registry
    shifts: Registry
    canonicalizers: Registry
    failures: list[PluginFailure] = field(default_factory=list)

    def by_kind(self) -> dict[str, Registry]:
        return {
            "backbones": self.backbones,
            "augmentations": self.augmentations,
            "imbalance": self.imbalance,
            "datasets": self.datasets,
            "shifts": self.shifts,
            "canonicalizers": self.canonicalizers,
        }


_runtime_plugins: dict[str, object] = {}


def register_plugin(plugin: object, name: str) -> None:
    """Register a plugin object (module or instance) in this process, on top of the entry points.

    For tests and notebooks; an installed package should use the ``bcauto`` entry-point group instead.
    """
    _runtime_plugins[name] = plugin
    components.cache_clear()


def unregister_plugin(name: str) -> None:
    """Undo :func:`register_plugin`."""
    _runtime_plugins.pop(name, None)
    components.cache_clear()


def _disabled() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


def make_manager() -> tuple[pluggy.PluginManager, dict[str, Provider], list[PluginFailure]]:
    """A plugin manager with every enabled entry point of group ``bcauto`` registered."""
    pm = pluggy.PluginManager("bcauto")
    pm.add_hookspecs(hookspecs)
    providers: dict[str, Provider] = {}
    failures: list[PluginFailure] = []
    disabled = _disabled()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
        package = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        plugin_name = f"{package}:{ep.name}"
        if ep.name in disabled or package in disabled or plugin_name in disabled or pm.has_plugin(plugin_name):
            continue
        try:
            module = ep.load()
            pm.register(module, name=plugin_name)
        except Exception as exc:  # a broken third-party plugin must not take the others down
            failures.append(PluginFailure(ep.value, package, f"{type(exc).__name__}: {exc}"))
            continue
        providers[plugin_name] = Provider(plugin=ep.value, package=package, version=version)
    for name, plugin in _runtime_plugins.items():
        pm.register(plugin, name=name)
        providers[name] = Provider(plugin=name, package="(registered at runtime)", version="")
    _drop_invalid(pm, providers, failures)
    return pm, providers, failures


def _drop_invalid(pm: pluggy.PluginManager, providers: dict[str, Provider], failures: list[PluginFailure]) -> None:
    """Unregister plugins implementing hooks that do not exist (usually a typo), reporting each one."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin)
            provider = providers.pop(name, Provider(name, name, "?"))
            pm.unregister(exc.plugin)
            failures.append(PluginFailure(provider.plugin, provider.package, f"{exc}; known hooks: {', '.join(HOOKS)}"))


def collect(pm: pluggy.PluginManager, providers: dict[str, Provider], failures: list[PluginFailure]) -> Components:
    """Call every ``register_*`` hook implementation and fill one registry per kind."""
    registries = {hook: Registry(kind) for hook, (kind, _) in HOOKS.items()}
    for hook, (kind, spec_type) in HOOKS.items():
        for impl in getattr(pm.hook, hook).get_hookimpls():
            provider = providers.get(impl.plugin_name) or Provider(impl.plugin_name, impl.plugin_name, "?")

            def register(spec, _provider=provider, _kind=kind, _type=spec_type, _registry=registries[hook]):
                if not isinstance(spec, _type):
                    raise BcautoError(
                        f"plugin {_provider.package} ({_provider.plugin}) registered a {type(spec).__name__} "
                        f"as a {_kind}; expected {_type.__name__}"
                    )
                # a broken spec would register fine and fail every trial that draws it: refuse it now, keep the rest
                problems = spec.problems()
                if problems:
                    failures.append(
                        PluginFailure(
                            _provider.plugin,
                            _provider.package,
                            f"{_kind} {getattr(spec, 'name', None)!r} refused: {'; '.join(problems)}",
                        )
                    )
                    return
                _registry.add(spec, _provider)

            try:
                impl.function(register=register)
            except BcautoError:
                raise
            except Exception as exc:
                failures.append(PluginFailure(provider.plugin, provider.package, f"{hook}: {type(exc).__name__}: {exc}"))
    return Components(
        backbones=registries["register_backbones"],
        augmentations=registries["register_augmentations"],
        imbalance=registries["register_imbalance_strategies"],
        datasets=registries["register_datasets"],
        shifts=registries["register_shifts"],
        canonicalizers=registries["register_canonicalizers"],
        failures=failures,
    )


def load_keras_objects() -> None:
    """Let every enabled plugin import its Keras-serializable classes (hook ``load_keras_objects``), so that a
    saved model holding them loads; plugins that fail to load are skipped, as in :func:`components`."""
    pm, _, _ = make_manager()
    pm.hook.load_keras_objects()


@functools.lru_cache(maxsize=1)
def components() -> Components:
    """All components of the installed, enabled plugins (loaded once per process)."""
    return collect(*make_manager())


def reload() -> Components:
    """Forget the loaded plugins and load them again (after installing or disabling one)."""
    components.cache_clear()
    return components()
