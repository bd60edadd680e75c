"""The Python API of `import tallformer`: cheap to import, every documented entry point there,
each with an `Example` block that runs (doctest) as it is written."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest

import tallformer

ENTRY_POINTS = ["load_config", "build_detector", "save_model", "load_model", "detect", "Detector",
                "evaluate", "MemoryBank"]


def test_importing_the_package_imports_no_torch_and_lists_the_api() -> None:
    code = ("import sys, tallformer; bad = [m for m in ('torch', 'numpy', 'av') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(ENTRY_POINTS) | {"Detection", "TallformerError", "__version__"} <= set(tallformer.__all__)
    assert set(tallformer.__all__) <= set(dir(tallformer))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tallformer.nope  # noqa: B018


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_the_example_of_each_entry_point_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # whatever an example writes stays in the test's folder
    obj = getattr(tallformer, name)
    assert "Example" in (obj.__doc__ or ""), f"tallformer.{name} has no Example block"
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(obj, f"tallformer.{name}") if t.examples]
    assert tests, f"tallformer.{name}'s Example has no >>> lines"
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)
