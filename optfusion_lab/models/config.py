"""Sizes of the hand-made baseline models."""

from dataclasses import dataclass

# EDCN's bridge interaction functions (optfusion_lab.components.sharing.BRIDGES; a test checks
# they agree); kept here as plain names so that configs validate without building modules.
BRIDGE_NAMES: tuple[str, ...] = ("hadamard", "add", "concat", "attention")


@dataclass(frozen=True)
class ModelConfig:
    """Free sizes of the baselines; dataset sizes (features, fields) come from the data."""

    embed_dim: int = 16  # D, the width of every field embedding
    mlp_dims: tuple[int, ...] = (400, 400, 400)  # hidden widths of the deep tower (EDCN ignores it)
    cross_layers: int = 3  # number of cross layers (DCN, DCN-V2) and of EDCN layers
    cin_sizes: tuple[int, ...] | None = None  # xDeepFM CIN sizes; None means (F, F, F)
    dropout: float = 0.0  # dropout after each hidden MLP layer; 0 disables it
    batch_norm: bool = False  # BatchNorm after each hidden Linear of the MLPs
    embed_init_std: float = 0.01  # embedding init N(0, std), as in the reference
    low_rank: int | None = None  # DCN-V2 rank r of W = U V^T; None means a full d x d matrix
    bridge: str = "hadamard"  # EDCN bridge: hadamard (the paper's default), add, concat, attention
    regulation_tau: float = 1.0  # EDCN temperature of the field gates softmax(w / tau)
    regulation_batch_norm: bool = True  # EDCN: scalar batch norm after each gate; False: gates x F
    regulation_eps: float = 1e-5  # EDCN: eps of that batch norm (PyTorch's, the authors' setting)

    def __post_init__(self) -> None:
        if self.embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {self.embed_dim}")
        if any(width <= 0 for width in self.mlp_dims):
            raise ValueError(f"mlp_dims must be positive, got {self.mlp_dims}")
        if self.cross_layers < 0:
            raise ValueError(f"cross_layers must be >= 0, got {self.cross_layers}")
        if self.cin_sizes is not None and (
            len(self.cin_sizes) == 0 or any(size <= 0 for size in self.cin_sizes)
        ):
            raise ValueError(f"cin_sizes must be None or positive sizes, got {self.cin_sizes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.bridge not in BRIDGE_NAMES:
            raise ValueError(
                f"bridge must be one of {', '.join(BRIDGE_NAMES)}, got {self.bridge!r}"
            )
        if self.regulation_tau <= 0:
            raise ValueError(f"regulation_tau must be positive, got {self.regulation_tau}")
        if self.regulation_eps <= 0:
            raise ValueError(f"regulation_eps must be positive, got {self.regulation_eps}")
        if self.low_rank is not None and self.low_rank <= 0:
            raise ValueError(f"low_rank must be None or positive, got {self.low_rank}")
