"""Sources for ``bcauto new-plugin``: the files every plugin package has (this module) and, in one module per
kind, the component's code and its test. They are ``string.Template`` texts over ``$name`` (the component),
``$module`` (the import name), ``$package`` (the distribution), ``$kind``, ``$registry`` and each kind's parts.
"""

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=69", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "$package"
version = "0.1.0"
description = "The $kind $name for bcauto"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["bcauto"]

# bcauto loads every module listed in this entry-point group and calls its @hookimpl functions
[project.entry-points.bcauto]
$name = "$module"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''\
# $package

A bcauto plugin that registers the $kind `$name` (made by `bcauto new-plugin $kind $name`).

```bash
pip install -e .
bcauto plugins    # lists $name, from $package
pytest
```

Use it: $usage
'''

TEST = '''\
"""$package: bcauto lists the $kind with this package's name, and the $kind works."""

import json

${third_party_imports}from bcauto import plugins
from bcauto.cli import main
${bcauto_imports}

def component():
    """The registered $kind, whether it came through the entry point or a runtime registration."""
    return plugins.components().$registry.get("$name")


def test_listed_with_this_package(capsys):
    plugins.reload()
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["components"]
    row = next(r for r in rows if r["name"] == "$name")
    assert (row["kind"], row["package"]) == ("$kind", "$package")


$test'''
