"""Prediction on a raw file with a trained run: encode it with the run's vocabulary, score it.

``frame = predict_file("runs/train/criteo-dcn", "new_rows.txt.gz")`` gives one row per input
row, in file order: ``probability``, plus ``label`` when the file is labelled.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .data.dataset import PreparedData
from .data.prepare import PrepareConfig, prepare
from .io import scratch_dir
from .train import binary_metrics, load_run, predict_proba, resolve_device


def predict_file(
    run_dir: str | Path,
    raw_file: str | Path,
    *,
    seed: int | None = None,
    device: str = "auto",
    batch_size: int = 16384,
    scratch_beside: str | Path | None = None,
) -> pd.DataFrame:
    """Click probabilities of every row of ``raw_file`` (labelled or not), scored by the run in
    ``run_dir`` (a ``train`` or ``retrain`` run).

    ``frame = predict_file("runs/train/criteo-dcn", "new_rows.txt.gz")``

    The file is encoded with the vocabulary of the run's training data (which must still exist
    and be unchanged) into a scratch folder next to ``scratch_beside`` (default: in the system's
    temporary folder), removed afterwards, failed or not; every row must parse. ``seed`` picks
    that seed's weights (default: the run's first seed). ``frame.attrs`` holds ``model`` (the
    run's model name) and, when the file has both classes, ``metrics`` (AUC and LogLoss).
    """
    torch_device = resolve_device(device)
    model, result = load_run(run_dir, seed=seed, device=torch_device)
    data_dir = Path(result["data_dir"])
    try:
        train_data = PreparedData.open(data_dir)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"the run's training data (its vocabulary) is gone: {exc}") from exc
    if train_data.num_features != result["num_features"]:
        raise ValueError(
            f"{data_dir} now has {train_data.num_features} features but the run was trained "
            f"with {result['num_features']}; the dataset was re-prepared since"
        )
    options = train_data.meta.get("options", {})
    cfg = PrepareConfig(
        dataset=result["dataset"],
        threshold=options.get("threshold", 2),
        drop_impression=options.get("drop_impression", False),
    )  # on_bad_lines="error": every input row gets its prediction, in order
    if scratch_beside is not None:
        scratch = scratch_dir(scratch_beside)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="optfusion-predict-")
    with scratch as folder:
        encoded_dir = Path(folder) / "encoded"
        prepare(raw_file, encoded_dir, cfg, vocab_from=data_dir)
        features, labels = PreparedData.open(encoded_dir).arrays("all")
        probs = predict_proba(model, features, batch_size, torch_device)
        frame = pd.DataFrame({"probability": probs})
        if labels is not None:
            frame["label"] = np.asarray(labels).astype(np.int64)
    frame.attrs["model"] = result["model"]
    if labels is not None and frame["label"].nunique() == 2:
        frame.attrs["metrics"] = binary_metrics(frame["label"].to_numpy(), probs)
    return frame
