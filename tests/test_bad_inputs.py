"""Bad inputs: every case of docs/gen_bad_inputs.py exits with its code and one error line naming what is wrong,
and docs/bad-inputs.md shows exactly that line (the page is generated from these cases, never written by hand)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))

import gen_bad_inputs as gen

STALE = "docs/bad-inputs.md no longer shows what this case prints; run python docs/gen_bad_inputs.py"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Where the first case that needs a model directory builds it, for the others to copy."""
    return tmp_path_factory.mktemp("models")


@pytest.mark.parametrize("case", gen.CASES, ids=[case.id for case in gen.CASES])
def test_bad_input_gets_one_clear_error_line(case, tmp_path, models):
    outcome = gen.run_case(case, tmp_path, models)
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert outcome.code == case.code, outcome.stderr
    assert gen.ERROR_LINE.search(outcome.message), outcome.stderr
    assert case.expect in outcome.message, outcome.stderr
    assert not outcome.created, f"a refused command left {outcome.created}"
    after = outcome.stderr.split(outcome.message, 1)[1] if outcome.message in outcome.stderr else ""
    assert not after.strip(), f"the error goes on past one line: {after!r}"
    assert gen.row(case, outcome) in gen.PAGE.read_text(encoding="utf-8").splitlines(), STALE


def test_the_page_has_a_row_per_case_in_order():
    rows = [line for line in gen.PAGE.read_text(encoding="utf-8").splitlines() if line.startswith("| ")][1:]
    ids = [case.id for case in gen.CASES]
    assert len(set(ids)) == len(ids) >= 30
    assert [row.split(" | ", 1)[0][2:] for row in rows] == ids, STALE
