"""`parity run -j N`: a run's cases in N worker processes on one machine.

Each (mode, case) pair is one task, handed to whichever worker is free (sampling cases cost far
more than text ones, so a fixed split would leave workers idle). A worker builds its contexts and
adapters once and reuses them (`Suite`); the parent prints progress as cases finish and puts the
cases back in run order (`merge`), so the result is the one a single process gets at the same
thread count.

Threads: each worker gets this process's torch thread count divided by N (at least 1). N workers
each using every core would fight over them; on a 2-core machine with other load, one process at
2 threads ran the suite in 118 s and at 1 thread in 31 s. The thread count moves the last bits of
reductions (never a verdict, in this suite), which is why environments record it: a `-j N` run
records its workers' count, and when that differs from the fixtures' it warns, as any run with a
different count would. The warning is true, so it stays.

Workers are spawned, not forked (torch is not fork-safe), and never see Ctrl-C: the parent takes
it, stops them and passes the interrupt on. An error in a worker reaches the parent as it was
raised (an InputError is still one line and exit 2), and the other workers are stopped too.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from parity.run.judge import case_line, to_stderr
from parity.run.plan import RunPlan, Suite, run_order
from parity.run.results import RunResult, merge
from parity.suite.cases import Case

_suite: Suite | None = None  # a worker's, built once it starts


def _ignore(_line: str) -> None:
    """A worker's progress: the parent prints each case's line and each warning once."""


def _start_worker(plan: RunPlan, threads: int) -> None:
    global _suite
    torch.set_num_threads(threads)
    _suite = Suite(plan, progress=_ignore)


def _run_case(case: Case, mode: str) -> RunResult:
    return _suite.run([case], mode)


def run_parallel(
    plan: RunPlan, cases: list[Case], jobs: int, progress: Callable[[str], None] = to_stderr
) -> list[RunResult]:
    """One result per mode of `plan` (the asked-for one first), the cases run by up to `jobs` workers."""
    # An empty run checks the plan (adapters, stages, reference, expectations) in a moment, before
    # any worker spends seconds starting up only to refuse it (a worker that fails to start breaks
    # the pool, and its reason reaches nobody).
    Suite(plan, progress=_ignore).run([], plan.mode)
    tasks = [(case, mode) for mode in plan.modes for case in cases]
    workers = min(jobs, len(tasks))
    threads = max(1, torch.get_num_threads() // workers)
    finished: dict[str, list[RunResult]] = {mode: [] for mode in plan.modes}
    warned: set[str] = set()
    executor = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
        initargs=(plan, threads),
    )
    others = set(multiprocessing.active_children())
    try:
        # The workers start during the submits (spawn: one per submit while none is idle) and inherit
        # this thread's signal mask. With Ctrl-C blocked here they never see it, not even while still
        # importing torch, and a Ctrl-C pressed meanwhile reaches this process once unblocked.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            futures = {executor.submit(_run_case, case, mode): case.id for case, mode in tasks}
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for n, future in enumerate(as_completed(futures), 1):
            result = future.result()
            for line in result.warnings:
                if line not in warned:
                    warned.add(line)
                    progress(f"warning: {line}")
            statuses = [r.status for r in result.results]
            progress(case_line(n, len(tasks), f"{futures[future]} ({result.mode})", statuses, result.seconds))
            finished[result.mode].append(result)
    except BaseException:
        # Ctrl-C or a failed case ends the run: stop the cases still running rather than wait for
        # results that would go nowhere.
        for worker in set(multiprocessing.active_children()) - others:
            worker.terminate()
        raise
    finally:
        executor.shutdown(cancel_futures=True)
    order = run_order(cases, plan.options)
    return [merge(finished[mode], order) for mode in plan.modes]
