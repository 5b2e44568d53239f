"""Fusion operations (ADD, PROD, CONCAT, ATT), the mixed fusion node and the edge gate."""

from optfusion_lab.fusion.gates import (
    StraightThroughGate,
    StraightThroughMask,
    straight_through_gate,
    straight_through_mask,
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
    stack_inputs,
    validate_operation,
)

__all__ = [
    "OPERATIONS",
    "OPERATION_CLASSES",
    "AddFusion",
    "AttentionFusion",
    "ConcatFusion",
    "FusionOp",
    "LowRankAttentionFusion",
    "MixedFusion",
    "ProdFusion",
    "StraightThroughGate",
    "StraightThroughMask",
    "build_operation",
    "stack_inputs",
    "straight_through_gate",
    "straight_through_mask",
    "validate_operation",
]
