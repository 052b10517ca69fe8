"""Attention modules: additive (Bahdanau) and Luong (general, dot). They hold the projections and call functional."""

from __future__ import annotations

import math

import torch

from .. import functional as F
from ..backends import check_backend_name
from .linear import Linear
from .torchscript import NotScriptable


def _resolve_keys(kind: str, keys, values, key_proj, project):
    if key_proj is None:
        if keys is None:
            raise ValueError(f"{kind}: give keys, or key_proj from project_keys(keys) together with values")
        key_proj = project(keys)
    if values is None:
        if keys is None:
            raise ValueError(f"{kind}: values are needed when keys is None")
        values = keys
    return key_proj, values


class AdditiveAttention(NotScriptable, torch.nn.Module):
    """Bahdanau attention: score(q, k) = v^T tanh(W_q q + W_k k + b).

    Args:
        query_size: Dq. key_size: Dk. attn_size: A. bias: learn b (held by the key projection).
        backend: backend name for the fused op, or None to follow the current selection.

    ``project_keys(keys [B, Tk, Dk]) -> key_proj [B, Tk, A]`` can be computed once per source sentence and passed to
    every decoder step as ``key_proj``.
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int, bias: bool = True,
                 backend: str | None = None, device=None, dtype=None):
        super().__init__()
        if isinstance(attn_size, bool) or not isinstance(attn_size, int) or attn_size < 1:
            raise ValueError(f"AdditiveAttention: attn_size must be a positive integer, got {attn_size!r}")
        factory = {"device": device, "dtype": dtype, "backend": backend}
        self.query_layer = Linear(query_size, attn_size, bias=False, **factory)
        self.key_layer = Linear(key_size, attn_size, bias=bias, **factory)
        self.v = torch.nn.Parameter(torch.empty(attn_size, device=device, dtype=dtype))
        self.backend = None if backend is None else check_backend_name(backend)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.v.shape[0])
        torch.nn.init.uniform_(self.v, -bound, bound)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """keys [B, Tk, Dk] -> key_proj [B, Tk, A]."""
        return self.key_layer(keys)

    def forward(self, query, keys=None, values=None, mask=None, key_proj=None):
        """query [B, Dq] or [B, Tq, Dq]; keys [B, Tk, Dk]; values [B, Tk, Dv] (default keys); mask bool [B, Tk].

        Returns (context [B, Dv] or [B, Tq, Dv], weights [B, Tk] or [B, Tq, Tk]).
        """
        key_proj, values = _resolve_keys("AdditiveAttention", keys, values, key_proj, self.project_keys)
        return F.additive_attention(self.query_layer(query), key_proj, self.v, values, mask, backend=self.backend)


class LuongAttention(NotScriptable, torch.nn.Module):
    """Luong attention: score(q, k) = q^T W_a k ("general") or q^T k ("dot", needs query_size == key_size).

    Same forward and project_keys as AdditiveAttention; for "general", project_keys applies W_a to the keys.
    """

    def __init__(self, query_size: int, key_size: int, method: str = "general", backend: str | None = None,
                 device=None, dtype=None):
        super().__init__()
        if method not in ("general", "dot"):
            raise ValueError(f"LuongAttention: method must be 'general' or 'dot', got {method!r}")
        if method == "dot" and query_size != key_size:
            raise ValueError(f"LuongAttention: method 'dot' needs query_size == key_size, got {query_size} "
                             f"and {key_size}")
        self.method = method
        self.key_layer = (Linear(key_size, query_size, bias=False, device=device, dtype=dtype, backend=backend)
                          if method == "general" else None)
        self.backend = None if backend is None else check_backend_name(backend)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """keys [B, Tk, Dk] -> [B, Tk, Dq] (W_a keys for "general", the keys themselves for "dot")."""
        return keys if self.key_layer is None else self.key_layer(keys)

    def forward(self, query, keys=None, values=None, mask=None, key_proj=None):
        """As AdditiveAttention.forward."""
        key_proj, values = _resolve_keys("LuongAttention", keys, values, key_proj, self.project_keys)
        return F.dot_attention(query, key_proj, values, mask, backend=self.backend)

    def extra_repr(self) -> str:
        return f"method={self.method!r}"
