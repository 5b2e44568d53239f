"""Fusion operations (ADD, PROD, CONCAT, ATT), the mixed fusion node and the edge gate."""

from optfusion_lab.fusion.mixed import MixedFusion, StraightThroughGate, straight_through_gate
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
    "build_operation",
    "stack_inputs",
    "straight_through_gate",
    "validate_operation",
]
