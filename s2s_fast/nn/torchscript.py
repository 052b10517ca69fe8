"""TorchScript refused in words: the drop-in modules' forward picks a backend in Python (s2s_fast.backends) and
calls custom operators, which torch.jit.script cannot compile; it failed on each with an error about its own parser
(s2s_fast.functional refuses torch.jit.trace likewise). torch.compile and torch.export trace them whole."""

from __future__ import annotations


class NotScriptable:
    """Mixin of the drop-in modules: torch.jit.script of one, or of a model that holds one, raises one clear error
    (torch.jit.script asks every module it compiles for __prepare_scriptable__ first)."""

    def __prepare_scriptable__(self):
        raise NotImplementedError(
            f"torch.jit.script cannot compile s2s_fast.nn.{type(self).__name__}: its forward chooses a backend in "
            "Python; use torch.compile or torch.export, which trace it whole (or torch.nn's module for TorchScript)")
