"""Named components with wildcard listing and helpful unknown-name errors (the timm way)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from bcauto.errors import BcautoError
from bcauto.text import did_you_mean

Spec = TypeVar("Spec")


def missing_plugin_hint(name: object) -> str:
    """The second guess after a typo: the component comes from a plugin package that is not installed."""
    return (
        f"if a plugin package provides {str(name)!r}, it may not be installed (pip install it, then "
        "`bcauto plugins` lists it, or says why it failed to load)"
    )


@dataclass(frozen=True)
class Provider:
    """Where a component came from: the plugin module and the package (distribution) that ships it."""

    plugin: str
    package: str
    version: str


class Registry(Generic[Spec]):
    """Components of one kind (backbones, augmentations, ...) by name, each with its provider."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[Spec, Provider]] = {}

    def add(self, spec: Spec, provider: Provider) -> None:
        name = getattr(spec, "name", None)
        if not isinstance(name, str) or not name:
            raise BcautoError(f"plugin {provider.package} ({provider.plugin}) registered a {self.kind} without a name")
        if name in self._entries:
            first = self._entries[name][1]
            raise BcautoError(
                f"{self.kind} {name!r} is registered twice: by {first.package} ({first.plugin}) "
                f"and by {provider.package} ({provider.plugin}); disable one with BCAUTO_DISABLE_PLUGINS"
            )
        self._entries[name] = (spec, provider)

    def get(self, name: str) -> Spec:
        """The spec called ``name``; an unknown name raises an error listing the names and the closest one."""
        try:
            return self._entries[name][0]
        except KeyError:
            raise BcautoError(self.unknown_message(name)) from None

    def provider(self, name: str) -> Provider:
        self.get(name)
        return self._entries[name][1]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching an fnmatch ``pattern`` such as ``"efficient*"``."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def unknown_message(self, name: str) -> str:
        # a lower bar than for study-file keys: a short prefix of a long name ('mobile') scores about 0.5
        hint = did_you_mean(name, self._entries, cutoff=0.5)
        message = f"unknown {self.kind} {name!r}{hint}; available: {', '.join(self.names()) or '(none)'}"
        # a name with a dot or a slash is more likely a path (--data cells.h5) than an uninstalled component
        return f"{message}; {missing_plugin_hint(name)}" if re.fullmatch(r"[\w-]+", str(name)) else message

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, Spec, Provider]]:
        for name in self.names():
            spec, provider = self._entries[name]
            yield name, spec, provider

    def __len__(self) -> int:
        return len(self._entries)
