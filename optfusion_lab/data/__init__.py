"""Datasets: schemas, streaming preprocessing, prepared data and the synthetic generator.

This package does not import torch; the batch loader lives in :mod:`optfusion_lab.data.loader`.
"""

from .errors import BadLineReport, DataFormatError
from .prepare import PrepareConfig, prepare
from .schemas import SCHEMAS, Schema, get_schema

__all__ = [
    "SCHEMAS",
    "BadLineReport",
    "DataFormatError",
    "PrepareConfig",
    "Schema",
    "get_schema",
    "prepare",
]
