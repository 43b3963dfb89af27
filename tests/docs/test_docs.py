"""The ``>>>`` examples on the documentation pages (docs/*.md) run and print what they show."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(p for p in DOCS_DIR.glob("*.md") if ">>> " in p.read_text())


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_examples(page: Path):
    # Drop the Markdown fences, so that an example's expected output ends at its block's end.
    text = re.sub(r"^```.*$", "", page.read_text(), flags=re.MULTILINE)
    test = doctest.DocTestParser().get_doctest(text, {}, page.stem, str(page), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_api_reference_lists_every_public_name():
    import gpytorch_rntk

    api = (DOCS_DIR / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. auto(?:class|function|data):: (\w+)", api, re.MULTILINE))
    assert set(gpytorch_rntk.__all__) <= documented, set(gpytorch_rntk.__all__) - documented
