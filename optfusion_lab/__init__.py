"""optfusion-lab: learned fusion (OptFusion) for deep click-through-rate models.

The notebook-facing API imports from the package itself::

    from optfusion_lab import prepare, PreparedData, run_seeds, search, retrain, Genotype

Importing the package is cheap: it does not import torch. Every name below is loaded when it is
first used (module ``__getattr__``), so ``import optfusion_lab`` and ``optfusion-lab prepare``
stay torch-free. Each function's docstring shows one call.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    # data (torch-free)
    "PrepareConfig": "optfusion_lab.data.prepare",
    "prepare": "optfusion_lab.data.prepare",
    "PreparedData": "optfusion_lab.data.dataset",
    # models
    "ModelConfig": "optfusion_lab.models",
    "build_model": "optfusion_lab.models",
    "Genotype": "optfusion_lab.models.genotype",
    "FusionNetwork": "optfusion_lab.models.supernet",
    "SupernetConfig": "optfusion_lab.models.supernet",
    # training
    "TrainConfig": "optfusion_lab.train",
    "Callback": "optfusion_lab.train",
    "TrainState": "optfusion_lab.train",
    "StopTraining": "optfusion_lab.train",
    "FitResult": "optfusion_lab.train",
    "SeedsResult": "optfusion_lab.train",
    "fit": "optfusion_lab.train",
    "fit_seeds": "optfusion_lab.train",
    "run_seeds": "optfusion_lab.train",
    "evaluate": "optfusion_lab.train",
    "predict_proba": "optfusion_lab.train",
    "load_run": "optfusion_lab.train",
    "predict_file": "optfusion_lab.predict",
    # search
    "SearchConfig": "optfusion_lab.fusion_search",
    "SearchResult": "optfusion_lab.fusion_search",
    "search": "optfusion_lab.fusion_search",
    "search_run": "optfusion_lab.fusion_search",
    "search_seeds": "optfusion_lab.fusion_search",
    "stability_summary": "optfusion_lab.fusion_search",
    "retrain": "optfusion_lab.fusion_search",
    "retrain_defaults": "optfusion_lab.fusion_search",
    "load_warm_start": "optfusion_lab.fusion_search",
    # presets
    "get_preset": "optfusion_lab.presets",
    "get_search_preset": "optfusion_lab.presets",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optfusion_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
