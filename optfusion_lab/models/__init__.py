"""CTR models: the hand-made baselines and their registry."""

from optfusion_lab.models.baselines import (
    DCN,
    DNN,
    EDCN,
    IPNN,
    DCNV2Parallel,
    DCNV2Stacked,
    DeepFM,
    FieldRegulation,
    XDeepFM,
)
from optfusion_lab.models.config import ModelConfig
from optfusion_lab.models.registry import MODELS, build_model

__all__ = [
    "DCN",
    "DNN",
    "EDCN",
    "IPNN",
    "MODELS",
    "DCNV2Parallel",
    "DCNV2Stacked",
    "DeepFM",
    "FieldRegulation",
    "ModelConfig",
    "XDeepFM",
    "build_model",
]
