"""Entry point: ``python bench/longtime.py --out bench/results/longtime_small_240p --preset small --size 240`` runs ``vos.bench.longtime`` with the same flags;
see that module for what it does and its options."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vos.bench.longtime import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
