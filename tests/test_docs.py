"""The docs: generated pages match the code, and the site builds with no broken link or anchor."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_generated_docs_match_the_code():
    result = subprocess.run([sys.executable, "docs/gen_reference.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_tutorial_code_blocks_come_from_the_example_plugin():
    page = (ROOT / "docs" / "tutorial-backbone.md").read_text()
    source = (ROOT / "plugins" / "bcauto-densenet" / "bcauto_densenet" / "__init__.py").read_text()
    assert source.strip() in page


def test_robustness_page_shift_example_keeps_the_shift_contract():
    import numpy as np

    page = (ROOT / "docs" / "robustness.md").read_text()
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "docs/robustness.md", "exec"), namespace)
    specs: list = []
    namespace["register_shifts"](specs.append)
    assert [spec.name for spec in specs] == ["vignetting"]
    images = np.full((3, 24, 24, 3), 200, np.uint8)
    mild, heavy = (specs[0].apply(images, severity, np.random.default_rng(0)) for severity in (1, 5))
    assert mild.shape == images.shape and mild.dtype == np.uint8
    assert np.array_equal(mild, specs[0].apply(images, 1, np.random.default_rng(0)))
    assert images.mean() - heavy.mean() > images.mean() - mild.mean() > 1.0


def test_study_file_reference_has_every_field():
    from bcauto.config import TABLES

    page = (ROOT / "docs" / "study-files.md").read_text()
    for section, model in TABLES.items():
        assert f"## `[{section}]`" in page
        for key in model.model_fields:
            assert f"| `{key}` |" in page, f"[{section}] {key} is missing from docs/study-files.md"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_mkdocs_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "tutorial-backbone" / "index.html").is_file()
