"""Gradients of the four cpu backward ops with every product in bfloat16, saved to argv[1]: run under two libraries
(PYTHONPATH) and compare with torch.equal."""
import sys, torch
import s2s_fast; from s2s_fast import functional as F, cpu as cpu_backend
print(s2s_fast.__file__, file=sys.stderr)
cpu_backend.force_bf16_products("always")
torch.ops.s2s_fast.cpu_bf16_from_work(0); torch.ops.s2s_fast.cpu_onednn_from_work(0)
out = {}
torch.manual_seed(0)
def w(*shape): return torch.randn(*shape) / shape[-1] ** 0.5
for op in ("lstm_layer", "gru_layer", "lstm_attention_decoder", "gru_attention_decoder"):
    torch.manual_seed(1)
    if op.endswith("layer"):
        g = 4 if op.startswith("lstm") else 3
        T, B, I, H = 17, 37, 50, 40
        args = dict(input=torch.randn(T, B, I), hx=torch.randn(B, H))
        if g == 4: args["cx"] = torch.randn(B, H)
        args.update(weight_ih=w(g*H, I), weight_hh=w(g*H, H), bias_ih=torch.randn(g*H), bias_hh=torch.randn(g*H),
                    lengths=torch.randint(0, T + 1, (B,)))
    else:
        g = 4 if op.startswith("lstm") else 3
        T, B, E, H, S, A = 7, 29, 12, 24, 9, 14
        args = dict(input=torch.randn(T, B, E), hx=torch.randn(B, H))
        if g == 4: args["cx"] = torch.randn(B, H)
        args.update(feed=torch.randn(B, H), weight_ih=w(g*H, E+H), weight_hh=w(g*H, H), bias_ih=torch.randn(g*H),
                    bias_hh=torch.randn(g*H), query_weight=w(A, H), key_proj=torch.randn(B, S, A), v=w(A),
                    values=torch.randn(B, S, H), mask=torch.rand(B, S) > 0.3, combine_weight=w(H, 2*H),
                    dropout_mask=(torch.rand(T, B, H) > 0.3).float() / 0.7)
        args["mask"][:, 0] = True
    leaves = {k: v.clone().requires_grad_() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in args.items()}
    outs = getattr(F, op)(**leaves, backend="cpu")
    torch.manual_seed(2)
    loss = sum((o * torch.randn_like(o)).sum() for o in outs if o.requires_grad)
    loss.backward()
    for k, v in leaves.items():
        if isinstance(v, torch.Tensor) and v.grad is not None: out[f"{op}.{k}"] = v.grad
torch.save(out, sys.argv[1])
