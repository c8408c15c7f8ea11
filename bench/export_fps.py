"""Entry point: ``python bench/export_fps.py --out bench/results`` runs ``vos.bench.export_fps`` with the same flags;
see that module for what it does and its options."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vos.bench.export_fps import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
