"""``bcauto new-plugin KIND NAME``: a ready-to-install plugin package with one working component and its tests.

Every kind goes through the same steps: the shared templates (pyproject with the ``bcauto`` entry point,
README, a test that the component is listed with the package's name) are filled with the kind's own parts
from ``bcauto.templates.<kind>`` (the hookimpl module, its usage line, its "it works" test).
"""

from __future__ import annotations

import re
from importlib import import_module
from pathlib import Path
from string import Template

from bcauto import templates
from bcauto.errors import BcautoError

# kind -> the registry (key of Components.by_kind()) its components land in
KINDS = {"backbone": "backbones", "augmentation": "augmentations", "imbalance": "imbalance", "dataset": "datasets", "shift": "shifts"}
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")


def check_name(name: str) -> str:
    """``name`` if it can name a component, a module suffix and an entry point; a BcautoError otherwise."""
    if not NAME_PATTERN.fullmatch(name) or name.endswith("_") or "__" in name:
        raise BcautoError(
            f"plugin name {name!r}: use lower-case letters, digits and single underscores, starting with a letter "
            "(at most 40 characters), such as tiny_net"
        )
    return name


def package_names(name: str) -> tuple[str, str]:
    """(distribution name, import name) of the plugin package for component ``name``."""
    return f"bcauto-{name.replace('_', '-')}", f"bcauto_{name}"


def render(kind: str, name: str) -> dict[str, str]:
    """The files of a new plugin package, by path relative to the package folder."""
    if kind not in KINDS:
        raise BcautoError(f"unknown plugin kind {kind!r}; expected one of {', '.join(KINDS)}")
    check_name(name)
    package, module = package_names(name)
    parts = import_module(f"bcauto.templates.{kind}")
    values = {"name": name, "module": module, "package": package, "kind": kind, "registry": KINDS[kind]}

    def fill(text: str) -> str:
        return Template(text).substitute(values)

    values.update(
        usage=fill(parts.USAGE),
        third_party_imports=parts.THIRD_PARTY_IMPORTS,
        bcauto_imports=getattr(parts, "BCAUTO_IMPORTS", ""),
        test=fill(parts.TEST),
    )
    return {
        "pyproject.toml": fill(templates.PYPROJECT),
        "README.md": fill(templates.README),
        f"{module}/__init__.py": fill(parts.MODULE),
        "tests/test_plugin.py": fill(templates.TEST),
    }


def check_free(name: str) -> None:
    """A BcautoError when an installed plugin already uses ``name`` or its package's names."""
    from importlib.metadata import PackageNotFoundError, distribution

    from bcauto.plugins import components

    # any kind: a study's [search.NAME] table is keyed by the name alone, and two components of one kind
    # with one name stop every command that loads the plugins
    for registry in components().by_kind().values():
        if name in registry:
            provider = registry.provider(name)
            raise BcautoError(
                f"plugin name {name!r} is taken: {provider.package} ({provider.plugin}) registers the {registry.kind} "
                f"{name!r}; choose another NAME (`bcauto plugins` lists the names in use)"
            )
    package = package_names(name)[0]
    try:
        distribution(package)
    except PackageNotFoundError:
        return
    raise BcautoError(
        f"plugin name {name!r}: the package {package} is already installed and installing the new one would replace it; choose another NAME"
    )


def new_plugin(kind: str, name: str, parent: str | Path = ".") -> Path:
    """Write the plugin package for a ``kind`` component ``name`` into ``parent``; returns its folder.

    The name must be free: no installed plugin registers a component of that name, of any kind.
    """
    files = render(kind, name)
    check_free(name)
    target = Path(parent) / package_names(name)[0]
    if target.exists():
        raise BcautoError(f"{target} already exists; choose another NAME or --dir, or remove it first")
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target
