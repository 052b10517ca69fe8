"""Running the programs of a Triton interpreter launch at once, one thread each: for kernels whose programs wait for
each other.

The interpreter runs a launch's programs one after another, so a program that waits for another (the spread RNN
schedule's barrier between steps) would wait forever. Inside ``concurrent_programs()`` every program of a launch runs
in a thread of its own with its own program id, and the launch returns when all have finished. Each program runs at a
pace of its own, drawn from a seed (a pause before each of its memory accesses), so programs drift whole steps apart
when nothing holds them together, and one that reads what another has not yet written shows. The threads interleave
under the GIL, so every load sees every earlier store: they show the barrier's counting, that it is needed, and that
every program reaches it (a test fails, not hangs, when one does not), not the GPU's memory ordering. Built on the
interpreter's internals (``GridExecutor``, ``InterpreterBuilder.grid_idx``, its masked loads, stores and atomics) of
triton 3.x; for tests.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import sys
import threading
import time

_program = threading.local()
_active = threading.Event()


def active() -> bool:
    """Whether interpreter launches now run their programs at once."""
    return _active.is_set()


class ProgramsStillWaiting(RuntimeError):
    """Some programs of a launch had not finished when the time ran out: a wait that not every program ends."""


class _Programs:
    """Stands in for the kernel function in the interpreter's loop over a launch's programs: starts each program in
    a thread; the last program's call waits for all of them."""

    def __init__(self, fn, builder, timeout_s: float, aborted: threading.Event, paces: random.Random):
        self.fn = fn
        self.__signature__ = inspect.signature(fn)
        self.__globals__ = fn.__globals__
        self.__name__ = fn.__name__
        self.builder = builder
        self.timeout_s = timeout_s
        self.aborted = aborted
        self.paces = paces
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def __call__(self, **args):
        index, grid = self.builder.grid_idx, self.builder.grid_dim
        thread = threading.Thread(target=self._run, args=(index, self.paces.random(), args), daemon=True)
        thread.start()
        self.threads.append(thread)
        if index == tuple(size - 1 for size in grid):
            self._wait()

    def _run(self, index, pace: float, args) -> None:
        self.builder.grid_idx = index
        _program.pace = pace
        try:
            self.fn(**args)
        except BaseException as error:  # noqa: BLE001 - raised again in the launching thread
            self.errors.append(error)

    def _wait(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        waiting = sum(thread.is_alive() for thread in self.threads)
        if waiting:
            # The waiting programs raise at their next atomic operation (a spin loop's) and end.
            self.aborted.set()
            for thread in self.threads:
                thread.join(10.0)
            raise ProgramsStillWaiting(f"{waiting} of {len(self.threads)} programs still running after "
                                       f"{self.timeout_s:.0f} s: a barrier that not every program reaches")
        if self.errors:
            raise self.errors[0]


@contextlib.contextmanager
def concurrent_programs(timeout_s: float = 300.0, seed: int = 0, pause_s: float = 1e-2):
    """Run each Triton interpreter launch's programs at once, one thread each, for the duration.

    ``seed`` draws each program's pace: a pause of up to ``pause_s`` before each of its memory accesses.
    ``timeout_s`` bounds a launch.
    """
    from triton.runtime import interpreter

    builder_type = interpreter.InterpreterBuilder
    call = interpreter.GridExecutor.__call__
    atomic_rmw = builder_type.create_atomic_rmw
    masked_load, masked_store = builder_type.create_masked_load, builder_type.create_masked_store
    paces = random.Random(seed)
    class_grid_idx = vars(builder_type).get("grid_idx")
    aborted = threading.Event()

    def threaded_call(self, *args, **kwargs):
        fn = self.fn
        self.fn = _Programs(fn, interpreter.interpreter_builder, timeout_s, aborted, paces)
        try:
            return call(self, *args, **kwargs)
        finally:
            self.fn = fn

    def drift():
        time.sleep(getattr(_program, "pace", 0.0) * pause_s)

    def drifting_load(self, *args, **kwargs):
        drift()
        return masked_load(self, *args, **kwargs)

    def drifting_store(self, *args, **kwargs):
        drift()
        return masked_store(self, *args, **kwargs)

    def abortable_atomic_rmw(self, *args, **kwargs):
        if aborted.is_set():
            raise ProgramsStillWaiting("aborted: the launch's time ran out")
        return atomic_rmw(self, *args, **kwargs)

    switch_interval = sys.getswitchinterval()
    builder_type.create_masked_load, builder_type.create_masked_store = drifting_load, drifting_store
    builder_type.grid_idx = property(lambda self: getattr(_program, "grid_idx", None),
                                     lambda self, value: setattr(_program, "grid_idx", value))
    builder_type.create_atomic_rmw = abortable_atomic_rmw
    interpreter.GridExecutor.__call__ = threaded_call
    sys.setswitchinterval(1e-5)
    _active.set()
    try:
        yield
    finally:
        _active.clear()
        sys.setswitchinterval(switch_interval)
        interpreter.GridExecutor.__call__ = call
        builder_type.create_atomic_rmw = atomic_rmw
        builder_type.create_masked_load, builder_type.create_masked_store = masked_load, masked_store
        if class_grid_idx is None:
            del builder_type.grid_idx
        else:
            builder_type.grid_idx = class_grid_idx
