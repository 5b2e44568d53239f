"""Building blocks of deep CTR models: embedding, MLP, cross networks, CIN, FM, inner product."""

from optfusion_lab.components.cin import CIN, CINLayer
from optfusion_lab.components.cross import CrossLayerV1, CrossLayerV2, CrossNetV1, CrossNetV2
from optfusion_lab.components.embedding import FeatureEmbedding, FirstOrderTerm
from optfusion_lab.components.interactions import FMInteraction, InnerProduct
from optfusion_lab.components.mlp import MLP

__all__ = [
    "CIN",
    "CINLayer",
    "CrossLayerV1",
    "CrossLayerV2",
    "CrossNetV1",
    "CrossNetV2",
    "FMInteraction",
    "FeatureEmbedding",
    "FirstOrderTerm",
    "InnerProduct",
    "MLP",
]
