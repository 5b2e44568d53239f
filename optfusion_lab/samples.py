"""Write the embedded samples of ``data_samples/``: ``python -m optfusion_lab.samples DIR``.

The planted-structure samples come from :mod:`optfusion_lab.data.synthetic`; the teacher
sample's labels come from the teacher model (:mod:`optfusion_lab.models.teacher`, torch), so
this writer sits above both packages. ``tests/test_synthetic.py`` checks that the committed
files are exactly what it writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .data.synthetic import SAMPLES, generate, write
from .data.teacher import TEACHER_GENOTYPE_FILE, TEACHER_SAMPLE
from .models.teacher import TEACHER_GENOTYPE, generate_teacher


def write_samples(directory: str | Path) -> list[Path]:
    """Write every embedded sample and the teacher's genotype into ``directory``."""
    directory = Path(directory)
    paths = [
        write(generate(dataset, rows, seed), directory / name)
        for dataset, (name, rows, seed) in SAMPLES.items()
    ]
    name, rows, seed = TEACHER_SAMPLE
    paths.append(write(generate_teacher(rows, seed), directory / name))
    paths.append(TEACHER_GENOTYPE.save(directory / TEACHER_GENOTYPE_FILE))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the embedded synthetic samples.")
    parser.add_argument("directory", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    for path in write_samples(args.directory):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
