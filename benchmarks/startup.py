"""Cold-start costs: building a client, and ``fanout --version``, each in a fresh process.

    python benchmarks/startup.py [--reps 9]

Prints medians over ``reps`` fresh interpreters of:

- ``import fanout`` plus ``Client()`` with ``FANOUT_PROVIDERS=collector``, once with every
  installed plugin allowed (the vendor plugins installed but not enabled) and once with the
  vendor plugins disabled (``FANOUT_DISABLE_PLUGINS``). Their ratio is the price of plugins
  that are installed but not used; the target is at most 1.3.
- the wall time of ``fanout --version`` (target under 0.2 s on the development machine).

Serverless functions and CLI invocations pay these on every cold start.

``--baseline PYTHON`` measures another installation (e.g. a venv of an older commit with the
same plugins installed) in the same run, sample for sample alternating with this one, so
that both sides see the same machine load::

    git worktree add /tmp/before <rev> && python3 -m venv /tmp/before/.venv
    /tmp/before/.venv/bin/pip install -e "/tmp/before[collector]" -e /tmp/before/plugins/...
    python benchmarks/startup.py --baseline /tmp/before/.venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUILD = (
    "import time; t0 = time.perf_counter(); import fanout; "
    "c = fanout.Client(register_atexit=False); t1 = time.perf_counter(); "
    "c.shutdown(0.1); print(t1 - t0)"
)
VENDOR_PLUGINS = "posthog,mixpanel,segment,amplitude,rudderstack"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "POSTHOG_"))}
    env.update(
        FANOUT_PROVIDERS="collector",
        FANOUT_COLLECTOR_URL="http://127.0.0.1:9",
        FANOUT_COLLECTOR_KEY="sk_benchmark",
        **extra,
    )
    return env


def _build_once(python: str, **extra: str) -> float:
    out = subprocess.run(
        [python, "-c", BUILD], env=_env(**extra), capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _version_once(python: str) -> float:
    exe = Path(python).with_name("fanout")
    t0 = time.perf_counter()
    subprocess.run([str(exe), "--version"], env=_env(), capture_output=True, check=True)
    return time.perf_counter() - t0


def _bare_once(python: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([python, "-c", "pass"], capture_output=True, check=True)
    return time.perf_counter() - t0


MEASURES = {
    "installed": lambda py: _build_once(py),
    "disabled": lambda py: _build_once(py, FANOUT_DISABLE_PLUGINS=VENDOR_PLUGINS),
    "version": _version_once,
    "bare": _bare_once,
}


def measure(pythons: list[str], reps: int) -> dict[str, dict[str, float]]:
    """Medians per interpreter; the interpreters take turns within every repetition."""
    samples: dict[str, dict[str, list[float]]] = {
        py: {m: [] for m in MEASURES} for py in pythons
    }
    for _ in range(reps):
        for what, run in MEASURES.items():
            for py in pythons:
                samples[py][what].append(run(py))
    return {
        py: {m: statistics.median(v) for m, v in per.items()} for py, per in samples.items()
    }


def _print(label: str, r: dict[str, float]) -> None:
    print(f"[{label}]")
    print(f"client build, vendor plugins installed : {r['installed'] * 1000:7.1f} ms")
    print(f"client build, vendor plugins disabled  : {r['disabled'] * 1000:7.1f} ms")
    print(f"  ratio (target <= 1.3)                : {r['installed'] / r['disabled']:7.2f}")
    print(f"fanout --version (wall)                : {r['version'] * 1000:7.1f} ms (target < 200)")
    print(f"  python -c pass (wall, for scale)     : {r['bare'] * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--baseline", metavar="PYTHON", help="another installation to compare")
    args = parser.parse_args()
    pythons = [sys.executable] + ([args.baseline] if args.baseline else [])
    results = measure(pythons, args.reps)
    if args.baseline:
        _print(f"baseline: {args.baseline}", results[args.baseline])
    _print(f"this: {sys.executable}", results[sys.executable])
    if args.baseline:
        this, base = results[sys.executable], results[args.baseline]
        print(
            f"this / baseline: build {this['installed'] / base['installed']:.2f}x, "
            f"--version {this['version'] / base['version']:.2f}x"
        )


if __name__ == "__main__":
    main()
