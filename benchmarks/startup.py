"""Cold-start costs: building a client, and ``fanout --version``, each in a fresh process.

    python benchmarks/startup.py [--reps 9]

Prints medians over ``reps`` fresh interpreters of:

- ``import fanout`` plus ``Client()`` with ``FANOUT_PROVIDERS=collector``, once with every
  installed plugin allowed (the vendor plugins installed but not enabled) and once with the
  vendor plugins disabled (``FANOUT_DISABLE_PLUGINS``). Their ratio is the price of plugins
  that are installed but not used; the target is at most 1.3.
- the wall time of ``fanout --version`` (target under 0.2 s on the development machine).

Serverless functions and CLI invocations pay these on every cold start.
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


def build_seconds(reps: int, **extra: str) -> float:
    samples = []
    for _ in range(reps):
        out = subprocess.run(
            [sys.executable, "-c", BUILD], env=_env(**extra), capture_output=True, text=True,
            check=True,
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def version_seconds(reps: int) -> float:
    exe = Path(sys.executable).with_name("fanout")
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "--version"], env=_env(), capture_output=True, check=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def python_seconds(reps: int) -> float:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], capture_output=True, check=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    all_plugins = build_seconds(args.reps)
    no_vendors = build_seconds(args.reps, FANOUT_DISABLE_PLUGINS=VENDOR_PLUGINS)
    version = version_seconds(args.reps)
    bare = python_seconds(args.reps)
    print(f"client build, vendor plugins installed : {all_plugins * 1000:7.1f} ms")
    print(f"client build, vendor plugins disabled  : {no_vendors * 1000:7.1f} ms")
    print(f"  ratio (target <= 1.3)                : {all_plugins / no_vendors:7.2f}")
    print(f"fanout --version (wall)                : {version * 1000:7.1f} ms (target < 200)")
    print(f"  python -c pass (wall, for scale)     : {bare * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
