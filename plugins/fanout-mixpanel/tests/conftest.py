"""Fixtures; helpers live in ``mixpanel_support`` (see its docstring for why)."""

from __future__ import annotations

import sys
from pathlib import Path

# Make ``mixpanel_support`` importable however pytest was started (rootdir or plugin dir).
sys.path.insert(0, str(Path(__file__).parent))
