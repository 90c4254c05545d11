"""Members of one family that share an architecture share one warmed TorchScript graph: a load copies weights only.

A freshly loaded TorchScript graph pays PyTorch's profiling executor on its first forwards (the executor profiles a
graph's first runs, then optimizes it: ``torch/csrc/jit/runtime/profiling_graph_executor_impl.cpp``), and each
``torch.jit.load`` starts a new compilation unit, so every member load paid it again: about 150 ms a forward on a
2-layer member, several forwards before answers came at full speed. A family's members are the same traced head
with other weights. :class:`GraphPool` keeps one warmed graph ("skeleton") per *signature* (every submodule's
TorchScript code, its constants, and the name, shape and dtype of every parameter and buffer): a member's graph with
the same signature is replaced by ``copy.deepcopy`` of the skeleton (a new module object of the same TorchScript
type, whose methods, and so whose executor and its optimized plan, are shared: ``torch/jit/_script.py``,
``RecursiveScriptModule.__deepcopy__``, and ``Module::deepcopy`` in ``torch/csrc/jit/api/module.cpp``) holding the
member's own parameter and buffer values. The graphs are not frozen (``compile.trace`` saves ``torch.jit.trace``
output as is), so weights are read through attributes, never folded into the shared code. A member whose signature
differs (another size, another head) gets its own graph and becomes the skeleton of its signature. Only graphs whose
weights are all parameters and buffers are shared: the replica shares the ``cpu`` and ``cuda`` backends' graphs only,
never a Neuron graph (its weights are inside the compiled model, where no ``state_dict`` reaches), and a graph without
a state is never shared.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from typing import Any

import torch

MAX_SKELETONS = 4
"""Signatures a pool keeps warm; the least recently used goes beyond this (a family has one, two with variants)."""


def signature(graph: Any) -> str | None:
    """What two graphs must share for one to run with the other's code; None when ``graph`` is not TorchScript."""
    if not isinstance(graph, torch.jit.ScriptModule):
        return None
    if not graph.state_dict():  # weights held elsewhere (a compiled Neuron graph keeps them in its own blob)
        return None
    h = hashlib.sha256()
    try:
        for name, mod in graph.named_modules():
            h.update(f"module {name} {mod.original_name}\n".encode())
            try:
                code, consts = mod.code_with_constants
            except (RuntimeError, AttributeError):  # a module without a forward of its own
                continue
            h.update(code.encode())
            for cname, value in sorted(consts.const_mapping.items()):
                h.update(f"const {cname} ".encode())
                if isinstance(value, torch.Tensor):
                    h.update(f"{value.dtype} {tuple(value.shape)} ".encode())
                    h.update(value.detach().cpu().contiguous().numpy().tobytes())
                else:
                    h.update(repr(value).encode())
        for k, v in graph.state_dict().items():
            h.update(f"state {k} {v.dtype} {tuple(v.shape)}\n".encode())
    except Exception:
        return None
    return h.hexdigest()


class GraphPool:
    """Warmed skeletons by signature; thread-safe."""

    def __init__(self, max_skeletons: int = MAX_SKELETONS) -> None:
        self.max_skeletons = max_skeletons
        self._skeletons: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.shared = 0
        """Graphs replaced by a copy of a skeleton."""

    def share(self, graph: Any) -> tuple[Any, bool]:
        """``graph``'s weights in a copy of the skeleton of its signature, and True; or ``graph`` itself and False
        (no skeleton yet: it becomes one once :meth:`adopt` is called after its warm-up; or not TorchScript)."""
        sig = signature(graph)
        if sig is None:
            return graph, False
        with self._lock:
            skeleton = self._skeletons.get(sig)
            if skeleton is not None:
                self._skeletons.move_to_end(sig)
        if skeleton is None:
            return graph, False
        clone = copy.deepcopy(skeleton)
        mine = graph.state_dict()
        with torch.no_grad():
            for k, v in clone.state_dict().items():
                v.copy_(mine[k])
        clone.eval()
        with self._lock:
            self.shared += 1
        return clone, True

    def adopt(self, graph: Any) -> None:
        """Keep a copy of a warmed ``graph`` as its signature's skeleton (no-op where one exists)."""
        sig = signature(graph)
        if sig is None:
            return
        with self._lock:
            if sig in self._skeletons:
                return
        skeleton = copy.deepcopy(graph)  # the member's own graph may be evicted; the skeleton stays
        with self._lock:
            self._skeletons.setdefault(sig, skeleton)
            while len(self._skeletons) > self.max_skeletons:
                self._skeletons.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._skeletons)
