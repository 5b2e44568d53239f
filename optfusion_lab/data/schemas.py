"""Dataset schemas: the raw columns of each format and the model fields derived from them.

A schema says what a raw file looks like (its columns, in the order of the official layout) and
which model *fields* come out of it. Every field is categorical; the transforms that turn raw
columns into field tokens live in :mod:`optfusion_lab.data.prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass

CRITEO_INT_COLUMNS = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CAT_COLUMNS = tuple(f"C{i}" for i in range(1, 27))

AVAZU_RAW_COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos",
    "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category",
    "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)

KDD12_RAW_COLUMNS = (
    "Click", "Impression", "DisplayURL", "AdID", "AdvertiserID", "Depth", "Position",
    "QueryID", "KeywordID", "TitleID", "DescriptionID", "UserID",
)


@dataclass(frozen=True)
class Schema:
    """The raw layout of one dataset format and the fields it yields."""

    name: str
    raw_columns: tuple[str, ...]  # columns of the official layout, in order
    label_column: str
    fields: tuple[str, ...]  # model fields, in the order of the feature matrix
    delimiter: str  # delimiter of the official layout
    has_header: bool  # whether the official layout starts with a header line
    numeric_fields: tuple[str, ...] = ()  # fields parsed as numbers (Criteo I1..I13)
    unthresholded_fields: tuple[str, ...] = ()  # fields whose every token is kept
    id_column: str | None = None  # a row-id column that is read and dropped

    @property
    def num_fields(self) -> int:
        return len(self.fields)


CRITEO = Schema(
    name="criteo",
    raw_columns=("label", *CRITEO_INT_COLUMNS, *CRITEO_CAT_COLUMNS),
    label_column="label",
    fields=CRITEO_INT_COLUMNS + CRITEO_CAT_COLUMNS,
    delimiter="\t",
    has_header=False,
    numeric_fields=CRITEO_INT_COLUMNS,
    unthresholded_fields=CRITEO_INT_COLUMNS,
)

AVAZU = Schema(
    name="avazu",
    raw_columns=AVAZU_RAW_COLUMNS,
    label_column="click",
    # "hour" (YYMMDDHH) becomes the hour of day; weekday and is_weekend are derived from it.
    fields=AVAZU_RAW_COLUMNS[2:] + ("weekday", "is_weekend"),
    delimiter=",",
    has_header=True,
    id_column="id",
)

KDD12 = Schema(
    name="kdd12",
    raw_columns=KDD12_RAW_COLUMNS,
    label_column="Click",
    # The reference keeps every non-label column, Impression included (see kdd12_schema).
    fields=KDD12_RAW_COLUMNS[1:],
    delimiter="\t",
    has_header=False,
)

SCHEMAS: dict[str, Schema] = {s.name: s for s in (CRITEO, AVAZU, KDD12)}


def kdd12_schema(drop_impression: bool = False) -> Schema:
    """The KDD12 schema; ``drop_impression`` removes the Impression count from the fields.

    The reference code keeps Impression as a field (11 fields). It is a count of how often the ad
    was shown, which leaks label information when clicks are aggregated per impression row, so a
    user may prefer to drop it (10 fields).
    """
    if not drop_impression:
        return KDD12
    return Schema(
        name="kdd12",
        raw_columns=KDD12.raw_columns,
        label_column=KDD12.label_column,
        fields=tuple(f for f in KDD12.fields if f != "Impression"),
        delimiter=KDD12.delimiter,
        has_header=KDD12.has_header,
    )


def get_schema(name: str, *, drop_impression: bool = False) -> Schema:
    """Look a schema up by dataset name; an unknown name is a clear error."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(SCHEMAS)}")
    if name == "kdd12":
        return kdd12_schema(drop_impression)
    if drop_impression:
        raise ValueError("drop_impression applies to the kdd12 dataset only")
    return SCHEMAS[name]
