"""The names in optfusion_lab.names agree with the registries and are what the CLI offers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from optfusion_lab import names
from optfusion_lab.cli import build_parser


def test_names_module_imports_nothing_heavy():
    code = (
        "import sys, optfusion_lab.names; "
        "print(sorted(m for m in ('torch', 'numpy', 'pandas', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_registry_holds_exactly_the_names():
    from optfusion_lab.data.schemas import SCHEMAS
    from optfusion_lab.fusion import OPERATION_CLASSES, OPERATIONS
    from optfusion_lab.fusion_search import SearchConfig
    from optfusion_lab.models import MODELS
    from optfusion_lab.models.genotype import DESIGNS
    from optfusion_lab.presets import PRESETS, SEARCH_PRESETS

    assert tuple(SCHEMAS) == names.DATASETS
    assert tuple(MODELS) == names.MODELS
    assert OPERATIONS == names.OPERATIONS == ("add", "prod", "concat", "att")
    assert tuple(OPERATION_CLASSES) == names.ALL_OPERATIONS
    assert tuple(DESIGNS) == names.DESIGNS
    for preset in PRESETS.values():
        assert tuple(preset.learning_rates) == names.MODELS
    for dataset in names.DATASETS:  # the default preset of a dataset's data is its own
        assert PRESETS[dataset].dataset == SEARCH_PRESETS[dataset].dataset == dataset
    for algorithm in names.ALGORITHMS:
        assert SearchConfig(algorithm=algorithm).algorithm == algorithm
    with pytest.raises(ValueError, match="unknown search algorithm"):
        SearchConfig(algorithm="random")


def test_every_shallow_block_builds_and_an_unknown_one_is_an_error():
    from optfusion_lab.models.supernet import SupernetConfig, build_block

    for shallow in names.SHALLOW_BLOCKS:
        assert SupernetConfig(shallow=shallow).shallow == shallow
        assert build_block("C1", shallow, num_fields=3, embed_dim=2) is not None
    with pytest.raises(ValueError, match="unknown shallow block 'fm'"):
        build_block("C1", "fm", num_fields=3, embed_dim=2)


def _choices(argv: list[str], option: str) -> tuple[str, ...]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[argv[0]]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


@pytest.mark.parametrize(
    ("command", "option", "expected"),
    [
        ("prepare", "--dataset", names.DATASETS),
        ("train", "--device", names.DEVICES),
        ("predict", "--device", names.DEVICES),
        ("search", "--device", names.DEVICES),
        ("search", "--shallow", names.SHALLOW_BLOCKS),
        ("search", "--design", names.DESIGNS),
        ("search", "--algorithm", names.ALGORITHMS),
        ("retrain", "--selection", names.SELECTIONS),
    ],
)
def test_cli_choices_come_from_the_names(command, option, expected):
    assert _choices([command], option) == expected


def test_default_preset_and_its_check_serve_training_and_search():
    from optfusion_lab.presets import (
        check_preset_fits,
        default_preset_name,
        get_preset,
        get_search_preset,
    )

    assert default_preset_name({"dataset": "kdd12"}) == "kdd12"
    assert default_preset_name({"dataset": "movielens"}) == "tiny"
    for preset in (get_preset("criteo"), get_search_preset("criteo")):
        message = "meant for criteo data, not kdd12; use --preset kdd12"
        with pytest.raises(ValueError, match=message):
            check_preset_fits(preset, {"dataset": "kdd12"})
        check_preset_fits(preset, {"dataset": "criteo"})
    check_preset_fits(get_search_preset("tiny"), {"dataset": "kdd12"})
