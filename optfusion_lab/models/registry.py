"""Command-line names of the baseline models."""

from torch import nn

from optfusion_lab.models.baselines import (
    DCN,
    DNN,
    EDCN,
    IPNN,
    DCNV2Parallel,
    DCNV2Stacked,
    DeepFM,
    XDeepFM,
)
from optfusion_lab.models.config import ModelConfig

MODELS: dict[str, type[nn.Module]] = {
    "dnn": DNN,
    "ipnn": IPNN,
    "deepfm": DeepFM,
    "dcn": DCN,
    "xdeepfm": XDeepFM,
    "dcnv2-stacked": DCNV2Stacked,
    "dcnv2-parallel": DCNV2Parallel,
    "edcn": EDCN,
}


def build_model(name: str, num_features: int, num_fields: int, cfg: ModelConfig) -> nn.Module:
    """Build the baseline called ``name``; raise ValueError listing the valid names otherwise.

    ``model = build_model("dcn", data.num_features, data.num_fields, ModelConfig(embed_dim=8))``
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name](num_features, num_fields, cfg)
