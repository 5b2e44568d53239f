"""Named hyperparameter presets: the reference settings per dataset, and ``tiny`` for tests.

A preset is a recipe, not a fixed config: the flat width ``d = F * D`` depends on the number of
fields ``F`` of the data, so a preset *resolves* to ``(ModelConfig, TrainConfig)`` for one model
name and one prepared dataset (:func:`resolve_preset`). Nothing here is hard-coded per dataset
size; ``F`` always comes from the data's ``meta.json``.

The dataset presets follow DESIGN.md section 3: embedding dim 40 (Criteo, Avazu) or 16 (KDD12),
batch 4096, up to 5 epochs with early stopping (patience 1), MLP widths equal to ``d`` (three
layers), three cross layers, CIN sizes ``[F, F, F]`` for xDeepFM, and the learning rate / L2 of the
authors' baseline table for each model (one value for both optimizer groups).

This module imports neither torch nor the models, so that the command line can list presets
without importing torch (the model names live in :mod:`optfusion_lab.names`);
:func:`resolve_preset` imports the models when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from optfusion_lab.names import DATASETS, MODELS

if TYPE_CHECKING:
    from optfusion_lab.models.config import ModelConfig
    from optfusion_lab.train import TrainConfig



@dataclass(frozen=True)
class Preset:
    """A named recipe of model sizes and training settings (see :func:`resolve_preset`)."""

    name: str  # the preset's name, e.g. "criteo" or "tiny"
    description: str  # one line for `optfusion-lab train --help`
    dataset: str | None  # the dataset the preset was tuned for; None fits any dataset
    learning_rates: Mapping[str, tuple[float, float]]  # model name -> (lr, l2) for both groups
    embed_dim: int  # D, the width of every field embedding
    mlp_dims: tuple[int, ...] | None = None  # fixed MLP widths; None means mlp_layers widths of d
    mlp_layers: int = 3  # number of MLP layers of width d when mlp_dims is None
    cross_layers: int = 3  # cross layers of DCN / DCN-V2, and the number of EDCN layers
    cin_sizes: tuple[int, ...] | None = None  # xDeepFM CIN sizes; None means (F, F, F)
    batch_size: int = 4096  # training batch size of the reference
    epochs: int = 5  # the reference trains up to 5 epochs, with early stopping
    patience: int = 1  # the reference stops at the first epoch without a better valid AUC
    embedding_l2: bool = True  # False: no L2 on the embedding tables (the network keeps its L2)

    def mlp_widths(self, num_fields: int) -> tuple[int, ...]:
        """The MLP widths for data with ``num_fields`` fields (``d = F * D`` unless fixed)."""
        if self.mlp_dims is not None:
            return tuple(self.mlp_dims)
        return (num_fields * self.embed_dim,) * self.mlp_layers


def _table(*rows: tuple[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    table = dict(rows)
    assert tuple(table) == MODELS, "a preset must list every model, in MODELS order"
    return table


# The authors' baseline table (lr / l2), one column per dataset. FNN is our "dnn"; the table has
# one row for DCNv2, used for both its stacked and parallel forms.
_CRITEO = _table(
    ("dnn", (1e-3, 3e-6)),
    ("ipnn", (3e-3, 3e-6)),
    ("deepfm", (3e-4, 1e-6)),
    ("dcn", (2e-3, 3e-6)),
    ("xdeepfm", (3e-3, 3e-7)),
    ("dcnv2-stacked", (1e-3, 5e-6)),
    ("dcnv2-parallel", (1e-3, 5e-6)),
    ("edcn", (3e-4, 3e-6)),
)
_AVAZU = _table(
    ("dnn", (1e-3, 3e-6)),
    ("ipnn", (1e-3, 3e-6)),
    ("deepfm", (3e-4, 3e-6)),
    ("dcn", (1e-4, 3e-6)),
    ("xdeepfm", (2e-3, 2e-7)),
    ("dcnv2-stacked", (3e-4, 3e-6)),
    ("dcnv2-parallel", (3e-4, 3e-6)),
    ("edcn", (3e-3, 1e-9)),
)
_KDD12 = _table(
    ("dnn", (3e-5, 1e-6)),
    ("ipnn", (3e-5, 1e-6)),
    ("deepfm", (3e-5, 1e-5)),
    ("dcn", (3e-5, 1e-6)),
    ("xdeepfm", (3e-5, 1e-6)),
    ("dcnv2-stacked", (3e-5, 1e-7)),
    ("dcnv2-parallel", (3e-5, 1e-7)),
    ("edcn", (1e-3, 0.0)),
)
_TINY = {name: (1e-3, 0.0) for name in MODELS}

PRESETS: dict[str, Preset] = {
    "criteo": Preset(
        name="criteo",
        description="reference Criteo settings: D=40, MLP widths d=F*D, batch 4096",
        dataset="criteo",
        learning_rates=_CRITEO,
        embed_dim=40,
    ),
    "avazu": Preset(
        name="avazu",
        description="reference Avazu settings: D=40, MLP widths d=F*D, batch 4096",
        dataset="avazu",
        learning_rates=_AVAZU,
        embed_dim=40,
    ),
    "kdd12": Preset(
        name="kdd12",
        description="reference KDD12 settings: D=16, MLP widths d=F*D, batch 4096",
        dataset="kdd12",
        learning_rates=_KDD12,
        embed_dim=16,
    ),
    "tiny": Preset(
        name="tiny",
        description="small and fast, for tests and CI: D=4, MLP (32, 32), batch 256, lr 1e-3",
        dataset=None,
        learning_rates=_TINY,
        embed_dim=4,
        mlp_dims=(32, 32),
        cross_layers=2,
        cin_sizes=(16, 16),
        batch_size=256,
        epochs=2,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError listing the valid names otherwise.

    ``preset = get_preset("criteo")``
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def check_model_name(name: str) -> str:
    """``name`` if it is a baseline's name; a ValueError listing the valid names otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return name


def default_preset_name(meta: Mapping) -> str:
    """The reference preset of the data's dataset (training and search presets share the
    dataset names), or ``tiny`` for data of no known dataset."""
    dataset = meta.get("dataset")
    return dataset if dataset in DATASETS else "tiny"


def check_preset_fits(preset: Preset | SearchPreset, meta: Mapping) -> None:
    """A ValueError when a dataset's preset is used on another dataset's data."""
    dataset = meta.get("dataset")
    if preset.dataset is not None and dataset is not None and dataset != preset.dataset:
        raise ValueError(
            f"preset {preset.name!r} is meant for {preset.dataset} data, not {dataset}; "
            f"use --preset {default_preset_name(meta)}"
        )


def resolve_preset(
    preset: str | Preset, model: str, meta: Mapping
) -> tuple[ModelConfig, TrainConfig]:
    """The (ModelConfig, TrainConfig) of ``preset`` for ``model`` on data described by ``meta``.

    ``meta`` is a prepared dataset's meta data (``PreparedData.meta``); it gives the number of
    fields ``F``. A dataset preset used on another dataset is a ValueError (use ``tiny``, or the
    dataset's own preset). To change a size that ``d`` depends on (``embed_dim``), replace it on
    the :class:`Preset` before resolving; change anything else on the returned configs.
    """
    from optfusion_lab.models.config import ModelConfig
    from optfusion_lab.train import TrainConfig

    preset = get_preset(preset) if isinstance(preset, str) else preset
    check_model_name(model)
    check_preset_fits(preset, meta)
    num_fields = int(meta["num_fields"])
    lr, l2 = preset.learning_rates[model]
    model_cfg = ModelConfig(
        embed_dim=preset.embed_dim,
        mlp_dims=preset.mlp_widths(num_fields),
        cross_layers=preset.cross_layers,
        cin_sizes=preset.cin_sizes if preset.cin_sizes is not None else (num_fields,) * 3,
    )
    train_cfg = TrainConfig(
        epochs=preset.epochs,
        batch_size=preset.batch_size,
        lr_emb=lr,
        l2_emb=l2 if preset.embedding_l2 else 0.0,
        lr_nn=lr,
        l2_nn=l2,
        patience=preset.patience,
    )
    return model_cfg, train_cfg


def with_sizes(
    preset: Preset,
    *,
    embed_dim: int | None = None,
    mlp_dims: tuple[int, ...] | None = None,
    cross_layers: int | None = None,
) -> Preset:
    """``preset`` with some sizes replaced (None keeps the preset's value)."""
    changes: dict = {}
    if embed_dim is not None:
        changes["embed_dim"] = embed_dim
    if mlp_dims is not None:
        changes["mlp_dims"] = tuple(mlp_dims)
    if cross_layers is not None:
        changes["cross_layers"] = cross_layers
    return replace(preset, **changes)


def with_embedding_l2(preset: Preset, enabled: bool | None) -> Preset:
    """``preset`` with its coupled L2 on the embedding tables on or off (None keeps it).

    Off is the better choice on small or sparse data: Adam's coupled weight decay reaches every
    row of the table at every step, also the rows of features absent from the batch, and Adam
    rescales that tiny gradient to a full-size step, so rare features lose what they learned
    between their occurrences (see the README). The reference presets keep it on.
    """
    return preset if enabled is None else replace(preset, embedding_l2=enabled)


def describe_presets() -> str:
    """One line per preset, for help texts."""
    return "\n".join(f"  {p.name:<8} {p.description}" for p in PRESETS.values())


# --- OptFusion search and retraining --------------------------------------------------------


@dataclass(frozen=True)
class SearchPreset:
    """Reference settings of the one-shot search and of retraining (DESIGN.md section 3)."""

    name: str  # the preset's name
    description: str  # one line for `optfusion-lab search --help`
    dataset: str | None  # the dataset the preset was tuned for; None fits any dataset
    embed_dim: int  # D; blocks work at d = F * D
    lr: float  # search: Adam learning rate of the weights (both groups)
    l2: float  # search: coupled L2 of the weights (both groups)
    arch_lr: float  # search: Adam learning rate of alpha and beta (no weight decay)
    retrain_hard: tuple[float, float]  # (lr, l2) of hard retraining
    retrain_soft: tuple[float, float]  # (lr, l2) of soft retraining (warm start)
    num_layers: int = 3  # L of the fusion graph (reference 3)
    batch_size: int = 4096  # the reference batch size
    epochs: int = 5  # up to 5 epochs with early stopping (patience 1)


SEARCH_PRESETS: dict[str, SearchPreset] = {
    "criteo": SearchPreset("criteo", "reference Criteo search: D=40, lr 3e-4, arch_lr 0.3",
                           "criteo", 40, 3e-4, 3e-6, 0.3, (3e-4, 3e-6), (3e-4, 3e-6)),
    "avazu": SearchPreset("avazu", "reference Avazu search: D=40, lr 1e-3, arch_lr 0.1",
                          "avazu", 40, 1e-3, 0.0, 0.1, (1e-3, 0.0), (1e-7, 0.0)),
    "kdd12": SearchPreset("kdd12", "reference KDD12 search: D=16, lr 3e-3, arch_lr 0.01",
                          "kdd12", 16, 3e-3, 0.0, 0.01, (2e-3, 0.0), (3e-8, 0.0)),
    "tiny": SearchPreset("tiny", "small and fast, for tests and CI: D=4, batch 256, 3 epochs",
                         None, 4, 3e-3, 0.0, 0.1, (3e-3, 0.0), (1e-3, 0.0), batch_size=256,
                         epochs=3),
}


def get_search_preset(name: str) -> SearchPreset:
    """The search preset called ``name``; a ValueError listing the valid names otherwise.

    ``preset = get_search_preset("tiny")``
    """
    if name not in SEARCH_PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(SEARCH_PRESETS)}")
    return SEARCH_PRESETS[name]
