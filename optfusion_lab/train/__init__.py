"""Training, evaluation and early stopping of one model on one prepared dataset.

One module per concern, each short enough to read at once:

- :mod:`.loop`: :func:`fit`, the training loop (on one screen), and :class:`FitResult`;
- :mod:`.events`: :class:`TrainState`, :class:`Callback`, :class:`StopTraining` and the
  :class:`EventStream` that calls callbacks (a failing monitor is reported once and dropped);
- :mod:`.config`: :class:`TrainConfig` (one frozen dataclass);
- :mod:`.optim`: Adam with an embedding group and a network group; :class:`JointOptimizer`;
- :mod:`.metrics`: :func:`predict_proba`, :func:`evaluate` (AUC and LogLoss, scikit-learn);
- :mod:`.run_config`: :class:`RunConfig`, the one source of config.json, the resume
  fingerprint and result.json's header;
- :mod:`.checkpoint`: seeds, RNG states, atomic checkpoints and their fingerprint;
- :mod:`.device`: :func:`resolve_device`, bf16 autocast;
- :mod:`.runs`: :func:`fit_seeds` / :func:`run_seeds` (one fit per seed, summarised as mean and
  sample std), the run directory (written as the run goes) and :func:`load_run`.

On CPU a run is deterministic for a given seed (same seed, same metrics). On CUDA some kernels
(embedding backward) use atomics, so runs agree closely but not bit for bit. The step loop never
synchronises with the device, except to read the loss for callbacks every ``log_every`` steps
and the non-finite-loss flag every ``nan_check_every`` steps.
"""

from optfusion_lab.io import write_atomic, write_json

from .checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .config import DEVICES, HISTORY_COLUMNS, SUMMARY_METRICS, TrainConfig
from .device import autocast, keep_freed_memory, resolve_device, synchronize
from .events import Callback, EventStream, StopTraining, TrainState
from .loop import FitResult, LoopState, TrainingDivergedError, fit
from .metrics import as_tensor, binary_metrics, count_parameters, evaluate, predict_proba
from .optim import (
    JointOptimizer,
    Optimizer,
    embedding_parameters,
    learning_rates,
    make_optimizer,
    param_groups,
)
from .run_config import (
    PRESENTATION_FIELDS,
    RESULT_FORMAT_VERSION,
    RunConfig,
    fingerprints_match,
)
from .runs import (
    EpochLog,
    SeedsResult,
    build_run_model,
    fit_seeds,
    load_run,
    model_config_from_dict,
    result_document,
    run_seeds,
    save_state_dict,
    seed_histories,
    summarize,
    summarize_seeds,
    write_run,
)

__all__ = [
    "fingerprints_match",
    "CHECKPOINT_FORMAT",
    "DEVICES",
    "HISTORY_COLUMNS",
    "PRESENTATION_FIELDS",
    "RESULT_FORMAT_VERSION",
    "SUMMARY_METRICS",
    "Callback",
    "EpochLog",
    "EventStream",
    "FitResult",
    "JointOptimizer",
    "LoopState",
    "RunConfig",
    "Optimizer",
    "SeedsResult",
    "StopTraining",
    "TrainConfig",
    "TrainState",
    "TrainingDivergedError",
    "as_tensor",
    "autocast",
    "binary_metrics",
    "build_run_model",
    "count_parameters",
    "embedding_parameters",
    "evaluate",
    "fit",
    "fit_seeds",
    "keep_freed_memory",
    "learning_rates",
    "load_checkpoint",
    "load_run",
    "make_optimizer",
    "model_config_from_dict",
    "param_groups",
    "predict_proba",
    "resolve_device",
    "result_document",
    "rng_state",
    "run_seeds",
    "save_checkpoint",
    "save_state_dict",
    "seed_everything",
    "seed_histories",
    "set_rng_state",
    "summarize",
    "summarize_seeds",
    "synchronize",
    "write_atomic",
    "write_json",
    "write_run",
]
