"""Fusion operations (ADD, PROD, CONCAT, ATT), the mixed fusion node and the edge gate."""

from optfusion_lab.fusion.gated import (
    GatedInputs,
    GatedProduct,
    GatedStack,
    GatedSum,
    GatedSumProduct,
    gate_inputs,
)
from optfusion_lab.fusion.gates import (
    StraightThroughGate,
    StraightThroughMask,
    StraightThroughMix,
    straight_through_gate,
    straight_through_mask,
    straight_through_mix,
)
from optfusion_lab.fusion.mixed import MixedFusion
from optfusion_lab.fusion.ops import (
    OPERATION_CLASSES,
    OPERATIONS,
    AddFusion,
    AttentionFusion,
    ConcatFusion,
    FusionOp,
    LowRankAttentionFusion,
    ProdFusion,
    build_operation,
    stack_attention_nets,
    validate_operation,
)

__all__ = [
    "OPERATIONS",
    "OPERATION_CLASSES",
    "AddFusion",
    "AttentionFusion",
    "ConcatFusion",
    "FusionOp",
    "GatedInputs",
    "GatedProduct",
    "GatedStack",
    "GatedSum",
    "GatedSumProduct",
    "LowRankAttentionFusion",
    "MixedFusion",
    "ProdFusion",
    "StraightThroughGate",
    "StraightThroughMask",
    "StraightThroughMix",
    "build_operation",
    "stack_attention_nets",
    "gate_inputs",
    "straight_through_gate",
    "straight_through_mask",
    "straight_through_mix",
    "validate_operation",
]
