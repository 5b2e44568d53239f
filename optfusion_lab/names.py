"""The names a user can choose, in one place: datasets, models, operations, search choices, devices.

The command line, the presets and the library read them from here; the registries that build
the things named (``optfusion_lab.models.MODELS``, ``optfusion_lab.fusion.OPERATION_CLASSES``,
...) are checked against them by the tests. This module imports nothing, so the command line
can list every choice without importing torch.
"""

from __future__ import annotations

# Datasets `optfusion-lab prepare` reads (optfusion_lab.data.schemas.SCHEMAS).
DATASETS: tuple[str, ...] = ("criteo", "avazu", "kdd12")

# Hand-made baselines of `optfusion-lab train` (optfusion_lab.models.MODELS), in this order.
MODELS: tuple[str, ...] = (
    "dnn",
    "ipnn",
    "deepfm",
    "dcn",
    "xdeepfm",
    "dcnv2-stacked",
    "dcnv2-parallel",
    "edcn",
)

# The paper's candidate fusion operations, in the order of beta's columns (the default).
OPERATIONS: tuple[str, ...] = ("add", "prod", "concat", "att")
# Every operation a user may choose: the paper's, and att-lite, a cheaper ATT (rank-32 nets).
ALL_OPERATIONS: tuple[str, ...] = (*OPERATIONS, "att-lite")

# Search algorithms: the paper's joint one-shot search, the sequential ablation (edges with ADD
# fixed, then operations) and bilevel (first-order DARTS).
ALGORITHMS: tuple[str, ...] = ("one-shot", "sequential", "bilevel")

# Shallow blocks of the fusion graph: DCN v1 cross layer, DCN-V2 cross layer, CIN layer.
SHALLOW_BLOCKS: tuple[str, ...] = ("cross", "crossv2", "cin")

# Hand-made fusion designs, as fixed edges of the fusion graph.
DESIGNS: tuple[str, ...] = ("parallel", "stacked")

# Derived-model selections: argmax operation per node, or the fixed softmax(beta) mixture.
SELECTIONS: tuple[str, ...] = ("hard", "soft")

# Device choices: auto picks cuda when available.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

# How the embedding tables are updated (optfusion_lab.train.TrainConfig.embedding_update): the
# whole table by dense Adam every step (the reference), or only the rows the batch touches.
EMBEDDING_UPDATES: tuple[str, ...] = ("dense", "sparse")


# Initialisations of beta (optfusion_lab.models.supernet.SupernetConfig.beta_init): per-node
# Xavier normal (the reference), all zeros (equal operation weights), N(0, std).
BETA_INITS: tuple[str, ...] = ("xavier", "uniform", "normal")
