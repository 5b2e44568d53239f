"""The training configuration (one frozen dataclass) and the column names of run files."""

from __future__ import annotations

from dataclasses import dataclass

from optfusion_lab.names import DEVICES, EMBEDDING_UPDATES

SUMMARY_METRICS = (
    "test_auc",
    "test_logloss",
    "best_valid_auc",
    "epochs_run",
    "train_seconds",
    "samples_per_second",
)
HISTORY_COLUMNS = ("epoch", "train_loss", "valid_auc", "valid_logloss", "seconds", "train_seconds")


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained; stored in result.json as ``asdict(cfg)``."""

    epochs: int = 5  # an upper bound: the reference trains up to 5 epochs with early stopping
    batch_size: int = 4096  # the reference batch size on every dataset
    lr_emb: float = 1e-3  # Adam learning rate of the embedding tables
    l2_emb: float = 0.0  # Adam weight_decay (coupled L2) of the embedding tables
    lr_nn: float = 1e-3  # Adam learning rate of every other parameter
    l2_nn: float = 0.0  # Adam weight_decay (coupled L2) of every other parameter
    patience: int = 1  # stop after this many epochs without a better valid AUC (reference 1)
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    amp: bool = False  # bf16 autocast of the forward pass; CUDA only, ignored on CPU
    shuffle: bool = True  # reshuffle every epoch (seed + epoch); False = the stored order
    eval_batch_size: int = 16384  # batch size of evaluation and prediction (no backward pass)
    nan_check_every: int = 100  # read the device's non-finite-loss flag every this many steps
    log_every: int = 20  # read the loss from the device for callbacks every this many steps
    threads: int | None = None  # torch CPU threads during fit; None keeps torch's default
    seed: int = 0  # seeds torch, numpy, random and the batch order
    progress: bool = True  # tqdm progress bars; False for quiet runs and tests
    data_on_device: bool = True  # CUDA only: hold the training split in GPU memory
    validate_start: bool = False  # validate the starting weights first, as "epoch 0": an epoch
    # must beat them, else they are kept (warm-started retraining, as the reference does)
    embedding_update: str = "dense"  # "dense": Adam over the whole table every step (the
    # reference); "sparse": sparse gradients, lazy Adam on the touched rows only (see .optim)
    compile: bool = False  # torch.compile (inductor) the model for the training steps (forward
    # and backward; evaluation stays eager): same formulas, other rounding; the first steps pay
    # the compilation (tens of seconds on a CPU)
    keep_freed_memory: bool = True  # CPU: keep freed memory for the next step's activations
    # (glibc; far fewer page faults, about 15 % more peak RSS: see device.keep_freed_memory);
    # False leaves the C allocator as it is, unless this process has already set it

    def __post_init__(self) -> None:
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "patience": self.patience,
            "eval_batch_size": self.eval_batch_size,
            "nan_check_every": self.nan_check_every,
            "log_every": self.log_every,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("lr_emb", "lr_nn"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("l2_emb", "l2_nn"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.embedding_update not in EMBEDDING_UPDATES:
            raise ValueError(f"embedding_update must be one of {', '.join(EMBEDDING_UPDATES)}, "
                             f"got {self.embedding_update!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or >= 1, got {self.threads}")
