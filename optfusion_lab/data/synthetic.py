"""Synthetic CTR files in the exact raw formats of Criteo, Avazu and KDD12, with a planted truth.

Every raw column has a *latent* categorical index per row, drawn from a Zipf law (popular values
first, a long tail), or missing. The click probability is a stated function of these indices:

    logit = bias
          + sum over first-order columns c of  w_c[k_c]                     (first-order effects)
          + sum over crossed pairs (a, b) of   scale * <u_a[k_a], u_b[k_b]>  (pairwise crosses)
          + scale * sin(pi * (s_x[k_x] + s_y[k_y] + s_z[k_z]))               (nonlinear part)
    label ~ Bernoulli(sigmoid(logit))

with w ~ N(0, first_order_scale^2), u rows ~ N(0, 1/rank) in R^rank, s ~ N(0, 1); a missing value
has index 0 like any other token. The columns in each role are listed per dataset in
``PLANTED``; all other columns are noise. The indices are then rendered as raw values: hex
tokens, integer counts, unsigned 64-bit IDs (above the int64 range for about half of them),
Avazu's YYMMDDHH hours, KDD12 click and impression counts.

The structure's parameters come from ``seed`` alone (not from the number of rows), so files of
different sizes made with one seed share one truth.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ..io import write_bytes
from .schemas import AVAZU_RAW_COLUMNS, CRITEO_CAT_COLUMNS, CRITEO_INT_COLUMNS


@dataclass(frozen=True)
class ColumnSpec:
    """How one raw column's latent index is drawn and rendered."""

    name: str
    vocab: int  # number of distinct latent values
    kind: str  # hex | count | small | decimal | uint64 | hour
    zipf: float = 1.1  # exponent of the popularity law (0 = uniform)
    missing: float = 0.0  # probability that the value is empty
    offset: int = 0  # added to rendered integers (count, small, decimal)


@dataclass(frozen=True)
class Planted:
    """The roles of columns in the click model (see the module docstring)."""

    first_order: tuple[str, ...]
    crosses: tuple[tuple[str, str], ...]
    nonlinear: tuple[str, ...]
    bias: float = -1.6  # gives a click rate near 20%
    first_order_scale: float = 0.5
    cross_scale: float = 1.0
    cross_rank: int = 4
    nonlinear_scale: float = 1.0


def _criteo_columns() -> list[ColumnSpec]:
    ints = [
        ColumnSpec(name, 40, "count", zipf=1.0, missing=m, offset=-2 if name == "I2" else 0)
        for name, m in zip(CRITEO_INT_COLUMNS, [0.45, 0, 0.2, 0.2, 0.03, 0.2, 0.04, 0.01, 0.04,
                                                0.45, 0.04, 0.75, 0.2], strict=True)
    ]
    vocabs = [300, 500, 3000, 2000, 30, 12, 2000, 100, 3, 1500, 1500, 3000, 1500, 25, 1500, 3000,
              10, 1000, 500, 4, 3000, 9, 14, 1500, 50, 1000]
    cats = [
        ColumnSpec(name, v, "hex", missing=0.3 if i >= 18 else 0.0)
        for i, (name, v) in enumerate(zip(CRITEO_CAT_COLUMNS, vocabs, strict=True))
    ]
    return ints + cats


def _avazu_columns() -> list[ColumnSpec]:
    specs = {
        "hour": ColumnSpec("hour", 240, "hour", zipf=0.0),
        "C1": ColumnSpec("C1", 7, "decimal", offset=1001),
        "banner_pos": ColumnSpec("banner_pos", 7, "small"),
        "device_type": ColumnSpec("device_type", 5, "small"),
        "device_conn_type": ColumnSpec("device_conn_type", 4, "small"),
    }
    vocabs = {"site_id": 1500, "site_domain": 1500, "site_category": 20, "app_id": 1500,
              "app_domain": 200, "app_category": 25, "device_id": 3000, "device_ip": 5000,
              "device_model": 2000, "C14": 1500, "C15": 8, "C16": 9, "C17": 400, "C18": 4,
              "C19": 60, "C20": 160, "C21": 60}
    out = []
    for name in AVAZU_RAW_COLUMNS[2:]:
        if name in specs:
            out.append(specs[name])
        elif name.startswith("C"):
            out.append(ColumnSpec(name, vocabs[name], "decimal", offset=15 * vocabs[name]))
        else:
            out.append(ColumnSpec(name, vocabs[name], "hex"))
    return out


def _kdd12_columns() -> list[ColumnSpec]:
    return [
        ColumnSpec("DisplayURL", 1500, "uint64"),
        ColumnSpec("AdID", 3000, "decimal", offset=20000000),
        ColumnSpec("AdvertiserID", 500, "decimal", offset=30000),
        ColumnSpec("Depth", 3, "small", zipf=0.5, offset=1),
        ColumnSpec("Position", 3, "small", offset=1),
        ColumnSpec("QueryID", 4000, "decimal"),
        ColumnSpec("KeywordID", 3000, "decimal"),
        ColumnSpec("TitleID", 3000, "decimal"),
        ColumnSpec("DescriptionID", 3000, "decimal"),
        ColumnSpec("UserID", 5000, "decimal"),
    ]


COLUMNS: dict[str, list[ColumnSpec]] = {
    "criteo": _criteo_columns(),
    "avazu": _avazu_columns(),
    "kdd12": _kdd12_columns(),
}

PLANTED: dict[str, Planted] = {
    "criteo": Planted(
        first_order=("I1", "I3", "I6", "C1", "C2", "C6", "C9", "C14", "C17"),
        crosses=(("C1", "C14"), ("I3", "C9"), ("C2", "C17")),
        nonlinear=("I6", "C6", "C20"),
    ),
    "avazu": Planted(
        first_order=("C1", "banner_pos", "site_id", "app_id", "device_model", "C14", "C17"),
        crosses=(("site_id", "app_category"), ("device_model", "C17"), ("banner_pos", "C21")),
        nonlinear=("site_category", "device_conn_type", "C19"),
    ),
    "kdd12": Planted(
        first_order=("AdID", "AdvertiserID", "Position", "QueryID", "TitleID"),
        crosses=(("Position", "AdID"), ("QueryID", "KeywordID"), ("Depth", "DescriptionID")),
        nonlinear=("UserID", "AdvertiserID", "Position"),
    ),
}


@dataclass
class SyntheticData:
    """A generated table of raw values and the truth behind it."""

    dataset: str
    table: pa.Table  # raw string columns in the official order
    latent: dict[str, np.ndarray]  # per raw column, the latent index of every row
    logits: np.ndarray  # the true logit of every row
    labels: np.ndarray  # uint8 clicks
    planted: Planted | None = field(repr=False)  # None for teacher data (see .teacher)


def _salt(name: str) -> int:
    return zlib.crc32(name.encode())


def _render_values(spec: ColumnSpec) -> pa.Array:
    """The raw string of every latent index of a column."""
    k = np.arange(spec.vocab, dtype=np.uint64)
    if spec.kind == "hex":
        codes = (k * np.uint64(0x9E3779B1) + np.uint64(_salt(spec.name))) & np.uint64(0xFFFFFFFF)
        return pa.array([f"{int(c):08x}" for c in codes])
    if spec.kind == "uint64":
        with np.errstate(over="ignore"):
            codes = k * np.uint64(0x9E3779B97F4A7C15) + np.uint64(_salt(spec.name))
        return pa.array([str(int(c)) for c in codes])
    if spec.kind == "count":  # strictly increasing, heavy-tailed integer counts
        values = k.astype(np.int64) + np.floor(np.expm1(k * 0.2)).astype(np.int64) + spec.offset
        return pc.cast(pa.array(values), pa.string())
    if spec.kind == "decimal":
        salt = _salt(spec.name) % 997 if spec.offset == 0 else 0
        values = k.astype(np.int64) + spec.offset + salt
        return pc.cast(pa.array(values), pa.string())
    if spec.kind == "small":
        return pc.cast(pa.array(k.astype(np.int64) + spec.offset), pa.string())
    if spec.kind == "hour":  # 10 days of October 2014 x 24 hours, as YYMMDDHH
        return pa.array([f"1410{21 + int(i) // 24:02d}{int(i) % 24:02d}" for i in k])
    raise ValueError(f"unknown column kind {spec.kind!r}")


def _zipf_indices(rng: np.random.Generator, spec: ColumnSpec, rows: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, spec.vocab + 1) ** spec.zipf
    # Shuffle which index is popular so that popularity and rendered value are unrelated.
    weights = weights[np.random.default_rng(_salt(spec.name)).permutation(spec.vocab)]
    return rng.choice(spec.vocab, size=rows, p=weights / weights.sum())


def column_specs(dataset: str, vocab_scale: float = 1.0) -> list[ColumnSpec]:
    """The columns of ``dataset``; ``vocab_scale`` multiplies the vocabularies of ID columns.

    The default sizes keep the embedded samples small; a large scale (e.g. 300 for Criteo)
    gives vocabularies and long tails closer to the real files, for benchmarks.
    """
    if dataset not in COLUMNS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(COLUMNS)}")
    return [
        replace(s, vocab=max(s.vocab, int(s.vocab * vocab_scale)))
        if s.kind in ("hex", "uint64", "decimal") and s.vocab >= 100
        else s
        for s in COLUMNS[dataset]
    ]


def planted_logits(
    specs: list[ColumnSpec], planted: Planted, latent: dict[str, np.ndarray], seed: int
) -> np.ndarray:
    """The true logit of every row, from the latent indices (index 0 stands for missing)."""
    vocab = {s.name: s.vocab + 1 for s in specs}  # + 1 for missing
    rng = np.random.default_rng([seed, 0])  # structure parameters: independent of row count
    rows = len(next(iter(latent.values())))
    logits = np.full(rows, planted.bias)
    for name in planted.first_order:
        w = rng.normal(0.0, planted.first_order_scale, vocab[name])
        logits += w[latent[name]]
    for a, b in planted.crosses:
        u = rng.normal(0.0, planted.cross_rank**-0.5, (vocab[a], planted.cross_rank))
        v = rng.normal(0.0, planted.cross_rank**-0.5, (vocab[b], planted.cross_rank))
        logits += planted.cross_scale * np.einsum("nr,nr->n", u[latent[a]], v[latent[b]])
    z = np.zeros(rows)
    for name in planted.nonlinear:
        z += rng.normal(0.0, 1.0, vocab[name])[latent[name]]
    logits += planted.nonlinear_scale * np.sin(np.pi * z)
    return logits


def generate(dataset: str, rows: int, seed: int = 0, vocab_scale: float = 1.0) -> SyntheticData:
    """Draw ``rows`` rows of ``dataset`` in its raw layout, with the planted click model."""
    specs = column_specs(dataset, vocab_scale)
    rng = np.random.default_rng([seed, 1])
    latent, columns = {}, {}
    for spec in specs:
        index = _zipf_indices(rng, spec, rows)
        missing = rng.random(rows) < spec.missing
        latent[spec.name] = np.where(missing, 0, index + 1)  # 0 = missing
        taken = pa.array(index, mask=missing)
        columns[spec.name] = _render_values(spec).take(taken)
    logits = planted_logits(specs, PLANTED[dataset], latent, seed)
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.uint8)
    label_strings = pc.cast(pa.array(labels), pa.string())

    if dataset == "criteo":
        ordered = {"label": label_strings, **columns}
    elif dataset == "avazu":
        ids = rng.integers(0, 2**64, rows, dtype=np.uint64, endpoint=False)
        ordered = {"id": pc.cast(pa.array(ids), pa.string()), "click": label_strings, **columns}
    else:  # kdd12: clicks and impressions are counts; a click implies at least one impression
        clicks = labels.astype(np.int64) * (1 + (rng.random(rows) < 0.1))
        impressions = np.maximum(clicks, rng.geometric(0.7, rows))
        ordered = {
            "Click": pc.cast(pa.array(clicks), pa.string()),
            "Impression": pc.cast(pa.array(impressions), pa.string()),
            **columns,
        }
    return SyntheticData(dataset, pa.table(ordered), latent, logits, labels, PLANTED[dataset])


def to_raw_bytes(data: SyntheticData) -> bytes:
    """The table in the dataset's official raw layout (Criteo and KDD12 TSV, Avazu CSV)."""
    header = data.dataset == "avazu"
    delimiter = "," if header else "\t"
    options = pa_csv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style="none")
    sink = io.BytesIO()
    if header:  # written by hand: pyarrow quotes header names whatever the quoting style
        sink.write((delimiter.join(data.table.column_names) + "\n").encode())
    pa_csv.write_csv(data.table, sink, write_options=options)
    return sink.getvalue()


def write(data: SyntheticData, path: str | Path) -> Path:
    """Write the raw file; a ``.gz`` suffix gzips it reproducibly (no timestamp)."""
    path = Path(path)
    raw = to_raw_bytes(data)
    if path.suffix == ".gz":
        raw = gzip.compress(raw, compresslevel=9, mtime=0)
    return write_bytes(path, raw)


# The embedded samples in data_samples/: file name, rows, seed (each file stays under 1 MiB).
SAMPLES = {
    "criteo": ("criteo_sample.txt.gz", 12_000, 2025),
    "avazu": ("avazu_sample.csv.gz", 18_000, 2025),
    "kdd12": ("kdd12_sample.tsv.gz", 20_000, 2025),
}

