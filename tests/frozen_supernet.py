"""A frozen copy of the supernet's fusion code as of commit f77e584 (do not update).

The fusion nodes then stacked their k inputs into a (k, B, d) tensor, gated a copy of it and
applied each operation to that copy, with one attention net (two ``nn.Linear``) per input for
ATT. The code below is that code, run on the parameters of a current
:class:`~optfusion_lab.models.supernet.FusionNetwork`; :func:`attention_nets` is the only place
that knows how the current ATT stores its weights (the mapping onto the old per-input nets).
``tests/test_supernet_frozen.py`` checks the current code against it, and
``tests/test_dead_nodes.py`` builds its older frozen forward on :func:`frozen_fuse`.
"""

from __future__ import annotations

import torch
from torch import nn

from optfusion_lab.fusion import straight_through_mask

# How close the current code's outputs and gradients must be to the frozen code's: the same
# formulas, evaluated (summed, multiplied) in another order. Values are of order 1e-3 to 1.
FLOAT64 = {"rtol": 1e-10, "atol": 1e-12}
FLOAT32 = {"rtol": 1e-4, "atol": 1e-6}


def attention_nets(op: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The per-input attention nets of an ATT operation: (W1 (h, d), b1 (h,), W2 (d, h)) per
    input, views of the operation's own parameters (gradients reach them). Today's ATT stores
    them stacked: input j's net is ``w1[j], b1[j], w2[j]``."""
    return [(op.w1[j], op.b1[j], op.w2[j]) for j in range(op.num_inputs)]


def frozen_gate_inputs(inputs, gates, num_inputs, dim, sources_fed=None):
    x = inputs if isinstance(inputs, torch.Tensor) else torch.stack(list(inputs))  # (k, B, d)
    if x.dim() != 3 or x.shape[0] != num_inputs or x.shape[2] != dim:
        raise ValueError(f"expected inputs of shape ({num_inputs}, B, {dim}), got {tuple(x.shape)}")
    g = gates.to(x.dtype)  # (k,)
    gated = x * g.view(-1, 1, 1)  # (k, B, d): g_j * x_j
    if sources_fed is not None:
        fed = sources_fed.to(x.dtype)  # (k,)
        gated = straight_through_mask(gated, fed.view(-1, 1, 1))  # (k, B, d)
        g = straight_through_mask(g, fed)  # (k,) effective gates
    any_active = (g.detach() != 0).any().to(x.dtype)
    return gated, g, any_active


def frozen_fuse(name: str, op: nn.Module, gated: torch.Tensor, gates: torch.Tensor):
    """Operation ``name`` (module ``op``) on the gated inputs (k, B, d) -> (B, d)."""
    if name == "add":
        return gated.sum(dim=0)  # (B, d)
    if name == "prod":
        factors = gated + (1 - gates).view(-1, 1, 1)  # (k, B, d): g x + (1 - g)
        return factors.prod(dim=0)  # (B, d)
    if name == "concat":
        k, batch, dim = gated.shape
        concat = gated.permute(1, 0, 2).reshape(batch, k * dim)  # (B, k*d)
        return op.linear(concat)  # (B, d)
    if name in ("att", "att-lite"):
        out = torch.zeros_like(gated[0])  # (B, d)
        for x_j, (w1, b1, w2) in zip(gated, attention_nets(op), strict=True):
            hidden = torch.relu(nn.functional.linear(x_j, w1, b1))  # nn.Linear(d, h), ReLU
            a_j = torch.softmax(nn.functional.linear(hidden, w2), dim=-1)  # Linear(h, d), Softmax
            out = out + a_j * x_j  # (B, d)
        return out
    raise ValueError(f"no frozen copy of operation {name!r}")


def frozen_mixed(fusion, inputs, gates, weights, sources_fed=None):
    """``MixedFusion.forward`` as it was."""
    gated, g, any_active = frozen_gate_inputs(inputs, gates, fusion.num_inputs, fusion.dim,
                                              sources_fed)
    out = 0
    for w, (name, op) in zip(weights, fusion.ops.items(), strict=True):
        out = out + w * frozen_fuse(name, op, gated, g)  # (B, d)
    return straight_through_mask(out, any_active)


def frozen_operation(op_name, op, inputs, gates, sources_fed=None):
    """``FusionOp.forward`` (one operation alone) as it was."""
    gated, g, any_active = frozen_gate_inputs(inputs, gates, op.num_inputs, op.dim, sources_fed)
    return straight_through_mask(frozen_fuse(op_name, op, gated, g), any_active)


def frozen_forward(net, x: torch.Tensor) -> torch.Tensor:
    """``FusionNetwork.forward`` as it was (every mode)."""
    e = net.embedding(x).flatten(start_dim=1)  # (B, F, D) -> (B, d)
    searching = net.mode in ("search", "fixed-edges")
    if searching:
        all_gates = net.edge_gates()  # (num_edges,)
        all_weights = net.operation_weights()  # (fusion nodes, ops)
    one = e.new_ones(())
    h, fed = {"E": e}, {"E": one}
    for node in (n for n in net.graph.nodes[1:] if n in net.inputs):
        sources = net.inputs[node]
        from_fed = None
        if searching:
            gates = all_gates[net.graph.edge_slice(node)]  # (k,)
            from_fed = torch.stack([fed[s] for s in sources])  # (k,) constant 0/1
            fed[node] = ((gates.detach() * from_fed) > 0).any().to(e.dtype)
        else:
            gates = e.new_ones(len(sources))
            fed[node] = one
        if node == "C0":
            fused = gates[0] * e
        else:
            stacked = torch.stack([h[s] for s in sources])  # (k, B, d)
            if searching:
                weights = all_weights[net.graph.fusion_nodes.index(node)]
            elif net.mode == "soft":
                weights = net.soft_weights[list(net.fusions).index(node)]
            else:
                weights = net.output.weight.new_ones(1)
            fused = frozen_mixed(net.fusions[node], stacked, gates, weights, from_fed)
        if node == "OUT":
            return net.output(fused).squeeze(-1)  # (B,)
        h[node] = straight_through_mask(net.blocks[node](e, fused), fed[node])
    raise AssertionError("the graph has no OUT node")


def frozen_attention_nets(num_inputs: int, dim: int, hidden: int | None) -> nn.ModuleList:
    """ATT's per-input nets as the old ``AttentionFusion.__init__`` built them."""
    hidden = dim if hidden is None else min(hidden, dim)
    return nn.ModuleList(
        nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim, bias=False),
                      nn.Softmax(dim=-1))
        for _ in range(num_inputs)
    )
