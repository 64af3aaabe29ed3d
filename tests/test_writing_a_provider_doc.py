"""docs/writing-a-provider.md's example plugin and its tests run as written.

The page's Python blocks that start with a file path comment (``# src/...``, ``# tests/...``)
are written to disk as those files, and pytest runs the page's tests against the page's
plugin in a fresh interpreter, with the plugin importable only from the written ``src``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-provider.md"
BLOCK = re.compile(r"```python\n# (?P<path>(?:src|tests)/[\w/]+\.py)\n(?P<code>.*?)```", re.S)


def _files() -> dict[str, str]:
    """Path → code; a later block for the same path (the lazy variant) is not a file."""
    files: dict[str, str] = {}
    for match in BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        files.setdefault(match["path"], match["code"])
    return files


def test_the_page_has_the_plugin_and_its_tests() -> None:
    files = _files()
    assert sorted(files) == ["src/fanout_acme/__init__.py", "tests/test_acme.py"]
    plugin = files["src/fanout_acme/__init__.py"]
    imports = set(re.findall(r"^(?:from|import) ([\w.]+)", plugin, re.M))
    assert imports == {"__future__", "collections.abc", "fanout.http", "fanout.provider"}


def test_the_example_plugin_passes_its_own_tests(tmp_path: Path) -> None:
    for path, code in _files().items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "ACME_"))}
    env["PYTHONPATH"] = str(tmp_path / "src")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
         "tests/test_acme.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
