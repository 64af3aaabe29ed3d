#!/usr/bin/env python3
"""Quick start for a fresh checkout: ``python3 dev.py demo`` and ``python3 dev.py test``.

Needs only Python 3.10+. The first run creates ``.venv`` here and installs fanout with its
collector and test extras plus the three vendor plugins from ``plugins/`` (editable); later
runs reuse it until a ``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PLUGINS = sorted(p for p in (ROOT / "plugins").glob("fanout-*") if (p / "pyproject.toml").exists())
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def _fingerprint() -> str:
    h = hashlib.sha256()
    for path in [ROOT / "pyproject.toml", *(p / "pyproject.toml" for p in PLUGINS)]:
        h.update(path.read_bytes())
    return h.hexdigest()


def ensure_env(extras: str = "collector,test") -> None:
    stamp = VENV / f".fanout-installed-{extras.replace(',', '-')}"
    if stamp.exists() and stamp.read_text() == _fingerprint():
        return
    if not PYTHON.exists():
        print(f"dev.py: creating {VENV.relative_to(ROOT)} ...", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    print("dev.py: installing fanout and the plugins (first run only) ...", file=sys.stderr)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    args = [*pip, "-e", f"{ROOT}[{extras}]"]
    for plugin in PLUGINS:
        # [test]: what each plugin's own tests need (the vendor SDK its parity tests use).
        args += ["-e", f"{plugin}[test]"]
    subprocess.run(args, check=True)
    stamp.write_text(_fingerprint())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "bench"):
        print(
            "usage: python3 dev.py demo | test [--slow | --all] [pytest args] | bench",
            file=sys.stderr,
        )
        return 2
    command, rest = argv[0], argv[1:]
    if sys.version_info < (3, 10):  # noqa: UP036 - run by whatever python3 is installed
        print("dev.py: fanout needs Python 3.10 or newer", file=sys.stderr)
        return 2
    if command == "demo":
        ensure_env()
        return subprocess.call([str(BIN / "fanout"), "demo", *rest])
    if command == "bench":
        ensure_env("collector,test,bench")
        code = 0
        for script in (
            "hot_path.py",
            "collector.py",
            "vendors.py",
            "app_latency.py",
            "cpu_per_event.py",
        ):
            path = ROOT / "benchmarks" / script
            if path.exists():
                code |= subprocess.call([str(PYTHON), str(path), *rest])
        return code
    ensure_env()
    tests = [str(ROOT / "tests")] + [str(p / "tests") for p in PLUGINS if (p / "tests").is_dir()]
    return subprocess.call([str(PYTHON), "-m", "pytest", *tests, *_selection(rest)], cwd=ROOT)


def _selection(args: list[str]) -> list[str]:
    """The default suite leaves out tests marked ``slow`` (outages, kills, several servers):
    ``--slow`` runs only those, ``--all`` everything, and an explicit ``-m`` wins."""
    if "--all" in args:
        return [a for a in args if a != "--all"]
    if "--slow" in args:
        return ["-m", "slow", *(a for a in args if a != "--slow")]
    if "-m" in args:
        return args
    return ["-m", "not slow", *args]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
