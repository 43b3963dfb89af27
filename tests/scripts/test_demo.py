"""The README's main job runs end to end (smoke size) and saves its plot."""

from __future__ import annotations

import pytest

pytest.importorskip("aeon")
pytest.importorskip("matplotlib")


def test_demo_smoke(tmp_path):
    from gpytorch_rntk.demo import main

    output = tmp_path / "kernel.png"
    results = main(["--smoke", "--output", str(output)])
    assert output.stat().st_size > 0
    assert results["metric"] == "accuracy" and results["plot"] == str(output)
    scores = [v for k, v in results.items() if k not in ("metric", "plot")]
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)  # RNTK and RBF
