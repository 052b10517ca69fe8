"""Replaying an RNN layer's per-step kernel launches from a graph captured once per shape.

The per-step schedule launches one kernel per time step from Python: T launches per forward and T per backward,
each some microseconds of host time against a few microseconds of GPU work. ``StepGraphs.run(key, launch_steps,
tensors, ...)`` has the effect of ``launch_steps(tensors)``; the first call of a key and layout runs it directly, the
second copies the tensors the launches read into static buffers of its own, runs the launches there once (the
results; the kernels are compiled for those buffers before any capture) and captures them in a graph; every later
call copies its tensors in, replays the graph and copies what the launches wrote back into the caller's tensors: a
few copies and one graph launch instead of T kernel launches.

On CUDA tensors the graph is a ``torch.cuda.CUDAGraph``; under the Triton interpreter (CPU tensors) it is
``RecordedGraph``, a stand-in that records the launches (made through ``launch``) during capture and re-runs them on
replay, so the same cache, keys, static buffers and copies run on a machine without a GPU. Not used (the launches run
directly) while torch traces the op (torch.compile, make_fx), nor inside a capture of the caller's own.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
from typing import Callable, Iterable, Mapping, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Graphs held at once (each with static copies of one call's buffers, O(T*B*H)); the least recently used goes first.
# A layer's forward and backward in each direction and shape take one each: 8 serve a two-layer bidirectional
# encoder and a decoder layer.
MAX_GRAPHS = 8
# Keys seen once and not yet captured: a shape captures on its second call, so lengths seen once never pay a capture.
MAX_SEEN = 64
# The cost model, unmeasured: a per-step launch from Python costs about 10 us of host time; a replayed call costs a
# replay and about ten copies (inputs in, results out) of a few us each, so replaying pays from about 8 steps on. To be
# set from s2s-fast bench's "triton: per step" and "triton: per step + graph" rows on a GPU.
GRAPH_MIN_STEPS = 8

_capturing = threading.local()


def launch(kernel_call: Callable[[], object]) -> None:
    """Launch a kernel (``kernel_call()`` does), or record the launch while a RecordedGraph captures on this thread."""
    graph = getattr(_capturing, "graph", None)
    if graph is None:
        kernel_call()
    else:
        graph.launches.append(kernel_call)


class _LaunchesOnly(TorchDispatchMode):
    """Refuses tensor operations: a RecordedGraph replays only the kernel launches it recorded, so anything else
    done during its capture would be lost on replay (a CUDA graph would have kept it)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        raise RuntimeError(f"only kernel launches may be captured in a step graph, not {func}")


class RecordedGraph:
    """A graph for the Triton interpreter: capture records the launches made through ``launch``, replay re-runs them
    in order on the same (static) tensors."""

    def __init__(self) -> None:
        self.launches: list[Callable[[], object]] = []

    @contextlib.contextmanager
    def capture(self):
        _capturing.graph = self
        try:
            with _LaunchesOnly():
                yield
        finally:
            _capturing.graph = None

    def replay(self) -> None:
        for kernel_call in self.launches:
            kernel_call()


class CudaGraph:
    """torch.cuda.CUDAGraph behind RecordedGraph's interface."""

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()

    def capture(self):
        # thread_local: the autograd engine's thread may run other work meanwhile.
        return torch.cuda.graph(self.graph, capture_error_mode="thread_local")

    def replay(self) -> None:
        self.graph.replay()


def _tracing() -> bool:
    """Whether torch is tracing the op being run (its kernels then become graph nodes, not launches)."""
    try:
        from torch._library.triton import is_wrap_triton_enabled
    except ImportError:
        return torch.compiler.is_compiling()
    return is_wrap_triton_enabled() or torch.compiler.is_compiling()


def replay_available(tensor: torch.Tensor) -> bool:
    """Whether the launches on ``tensor``'s device can be captured and replayed here and now."""
    if _tracing():
        return False
    if tensor.device.type == "cuda":
        return not torch.cuda.is_current_stream_capturing()
    # The kernels run on CPU tensors only under the interpreter: the stand-in graph.
    return tensor.device.type == "cpu"


def replay_by_default(tensor: torch.Tensor, steps) -> bool:
    """The cost model's choice for a per-step layer call: replay on CUDA tensors from GRAPH_MIN_STEPS steps on."""
    return tensor.device.type == "cuda" and not isinstance(steps, torch.SymInt) and steps >= GRAPH_MIN_STEPS


def _layout(tensors: Mapping[str, Optional[torch.Tensor]]) -> tuple:
    """What a graph captured on static buffers depends on besides the key: each buffer's shape, strides, dtype and
    device (None for an absent one)."""
    return tuple((name, None) if t is None else (name, tuple(t.shape), t.stride(), t.dtype, t.device)
                 for name, t in tensors.items())


def _stream(tensors: Mapping[str, Optional[torch.Tensor]]):
    """The stream the call runs on: calls on different streams never share static buffers."""
    device = next(t.device for t in tensors.values() if t is not None)
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None


@dataclasses.dataclass
class _Graph:
    graph: object  # CudaGraph or RecordedGraph
    statics: dict  # name -> static buffer (None for an absent one)


class StepGraphs:
    """A bounded cache of captured step graphs, keyed by what the launches depend on (``key``: the op, the pass, the
    schedule's flags) and the layout of every buffer they touch."""

    def __init__(self, max_graphs: int = MAX_GRAPHS, max_seen: int = MAX_SEEN) -> None:
        self.max_graphs = max_graphs
        self.max_seen = max_seen
        self._graphs: collections.OrderedDict = collections.OrderedDict()
        self._seen: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._graphs)

    def graphs(self) -> list:
        """The captured graphs, least recently used first."""
        return [entry.graph for entry in self._graphs.values()]

    def clear(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._seen.clear()

    def run(self, key: tuple, launch_steps: Callable[[Mapping[str, Optional[torch.Tensor]]], None],
            tensors: Mapping[str, Optional[torch.Tensor]], *, written: Iterable[str],
            fresh: Iterable[str] = ()) -> None:
        """``launch_steps(tensors)``, through a graph from a key's second call on.

        Args:
            key: hashable; everything besides the buffers' layouts that the launches depend on.
            launch_steps: makes the kernel launches (only those, through ``launch``) on the buffers it is given.
            tensors: name -> buffer (or None), every tensor the launches read or write.
            written: the buffers the launches write: copied back into ``tensors`` after a replay.
            fresh: written buffers whose incoming contents the launches never read: not copied in.
        """
        full_key = (key, _layout(tensors), _stream(tensors))
        with self._lock:
            entry = self._graphs.get(full_key)
            if entry is not None:
                self._graphs.move_to_end(full_key)
                self._copy_in(entry.statics, tensors, fresh)
                entry.graph.replay()
            elif full_key not in self._seen:
                self._seen[full_key] = None
                if len(self._seen) > self.max_seen:
                    self._seen.popitem(last=False)
                launch_steps(tensors)
                return
            else:
                del self._seen[full_key]
                entry = self._capture(launch_steps, tensors, fresh)
                self._graphs[full_key] = entry
                if len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
            for name in written:
                tensors[name].copy_(entry.statics[name])

    def _capture(self, launch_steps, tensors, fresh) -> _Graph:
        statics = {name: None if t is None else torch.empty_like(t) for name, t in tensors.items()}
        self._copy_in(statics, tensors, fresh)
        # This call's results, and the kernels compiled for the static buffers' alignment before the capture.
        launch_steps(statics)
        device = next(t.device for t in tensors.values() if t is not None)
        graph = CudaGraph() if device.type == "cuda" else RecordedGraph()
        with graph.capture():
            launch_steps(statics)
        return _Graph(graph, statics)

    @staticmethod
    def _copy_in(statics, tensors, fresh) -> None:
        for name, tensor in tensors.items():
            if tensor is not None and name not in fresh:
                statics[name].copy_(tensor)


# The one cache of every Triton RNN layer (keys name the op and the pass).
STEP_GRAPHS = StepGraphs()


def run_steps(key: tuple, launch_steps: Callable[[Mapping[str, Optional[torch.Tensor]]], None],
              tensors: Mapping[str, Optional[torch.Tensor]], *, graph: bool, written: Iterable[str],
              fresh: Iterable[str] = ()) -> None:
    """``launch_steps(tensors)``: through STEP_GRAPHS (arguments as StepGraphs.run) when ``graph`` is asked for and
    replay_available, else directly."""
    if graph and replay_available(next(t for t in tensors.values() if t is not None)):
        STEP_GRAPHS.run(key, launch_steps, tensors, written=written, fresh=fresh)
    else:
        launch_steps(tensors)
