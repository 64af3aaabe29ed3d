"""multiprocessing children with a client built at import time, under every start method.

A child leaves through ``os._exit`` after its bootstrap's finalizers; fanout must have
registered one in every child, however the client got there. Under spawn and forkserver
the child imports the main module and unpickles its target (importing the worker module)
*before* its bootstrap, while ``multiprocessing.parent_process()`` is still ``None``; the
bootstrap then clears the finalizers registered so far. Forkserver children (Linux's default
start method from Python 3.14) have no ``atexit`` to fall back on up to 3.12, so a missed
finalizer lost every event they tracked.

Each child tracks through a module-level client (the usual way to hold one) and writes the
ids to a file; the reference collector must store exactly those, and each child reports
whether fanout's finalizer was registered in it. The flush interval is 60 s, so only the
exit path can deliver.
"""

from __future__ import annotations

import os
import textwrap

import pytest
from test_lifecycle_late_clients import (
    AppRun,
    Reference,
    assert_stored_exactly,
    reference_collector,
    run_app,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and forkserver")

#: Imported by the children: the work, and whether fanout's finalizer is registered.
MP_HELPERS = """
import os
from multiprocessing import util

from fanout import _lifecycle
from lc_common import T

EVENTS = 25


def fanout_finalizer_registered():
    return any(
        f._callback is _lifecycle.shutdown_all for f in list(util._finalizer_registry.values())
    )


def run_work(client, i):
    with open(os.environ["FINALIZERS_FILE"], "a") as f:
        f.write(f"{os.getpid()} {fanout_finalizer_registered()}\\n")
    for j in range(EVENTS):
        T("mp", client=client, properties={"i": i, "j": j})
    return i
"""

#: The worker module: its client is built when it is imported, in whichever process.
MP_WORK = """
import fanout
from mp_helpers import run_work

client = fanout.Client()


def work(i):
    return run_work(client, i)
"""

#: How the main module gets ``work``: (code at module level, code first in ``main``).
WHERE = {
    # imported by the main module: a spawn or forkserver child imports it while it
    # imports the main module
    "worker module, imported by the main module": ("from mp_work import work", ""),
    # a module-level client in the main module itself
    "main module": (MP_WORK, ""),
    # imported only under the main guard: a child imports it with its work (a Process's
    # while unpickling its target, before the bootstrap; a pool worker's with its first task)
    "worker module, imported under the main guard": ("", "from mp_work import work"),
}

HOW = {
    "Process": """
        ps = [ctx.Process(target=work, args=(i,)) for i in range(3)]
        [p.start() for p in ps]; [p.join(60) for p in ps]
        assert [p.exitcode for p in ps] == [0, 0, 0], [p.exitcode for p in ps]
        return 3
        """,
    "Pool(maxtasksperchild=1)": """
        pool = ctx.Pool(2, maxtasksperchild=1)
        assert pool.map(work, range(4)) == [0, 1, 2, 3]
        pool.close(); pool.join()
        return 4
        """,
    "ProcessPoolExecutor": """
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(2, mp_context=ctx) as ex:
            assert list(ex.map(work, range(4))) == [0, 1, 2, 3]
        return 4
        """,
}


def _main_script(method: str, where: str, how: str, preload: bool = False) -> str:
    top, first = WHERE[where]
    lines = [
        "import multiprocessing as mp",
        "import sys",
        top,
        "",
        "def main():",
        f"    ctx = mp.get_context({method!r})",
    ]
    if preload:
        lines.append("    ctx.set_forkserver_preload(['mp_work'])")
    if first:
        lines.append(f"    {first}")
    lines.append(textwrap.indent(textwrap.dedent(HOW[how]).strip(), "    "))
    lines += [
        "",
        "if __name__ == '__main__':",
        "    print(main())",
    ]
    return "\n".join(lines) + "\n"


def _run(tmp_path, method: str, where: str, how: str, preload: bool = False) -> None:
    finalizers = tmp_path / "finalizers.txt"
    finalizers.write_text("")
    with reference_collector(tmp_path) as reference:
        run = run_app(
            reference,
            tmp_path,
            _main_script(method, where, how, preload),
            files={"mp_helpers.py": MP_HELPERS, "mp_work.py": MP_WORK},
            env={"FINALIZERS_FILE": str(finalizers)},
        )
        _check(reference, run, finalizers.read_text().splitlines())


def _check(reference: Reference, run: AppRun, finalizers: list[str]) -> None:
    assert run.returncode == 0, run.stderr
    tasks = int(run.stdout.split()[-1])
    assert_stored_exactly(reference, run, tasks * 25)
    assert len(finalizers) == tasks
    missing = [line for line in finalizers if not line.endswith(" True")]
    assert not missing, f"children without fanout's finalizer (pid, registered): {missing}"


CASES = [
    (method, where, how)
    for method in ("fork", "spawn", "forkserver")
    for where in WHERE
    for how in HOW
]
#: Run every time (the rest is marked slow): forkserver children, which lost everything
#: before, with the client built in each place, and with each kind of pool once.
QUICK = {("forkserver", where, "Process") for where in WHERE} | {
    ("forkserver", "worker module, imported by the main module", how) for how in HOW
}


@pytest.mark.parametrize(
    ("method", "where", "how"),
    [
        pytest.param(*case, marks=() if case in QUICK else pytest.mark.slow, id="-".join(case))
        for case in CASES
    ],
)
def test_children_deliver_what_a_client_built_at_import_time_tracked(
    method, where, how, tmp_path
):
    _run(tmp_path, method, where, how)


@pytest.mark.parametrize(
    "how", [pytest.param(how, marks=() if how == "Process" else pytest.mark.slow) for how in HOW]
)
def test_forkserver_children_of_a_server_that_preloaded_the_worker_module_deliver(
    how, tmp_path
):
    """The client is built in the forkserver process (``set_forkserver_preload``), and each
    child inherits it through the server's fork."""
    _run(tmp_path, "forkserver", "worker module, imported under the main guard", how, preload=True)
