"""Entry point: ``python bench/study.py --root data/demo --work runs/study --out bench/results --jobs 2`` runs ``vos.bench.study`` with the same flags;
see that module for what it does and its options."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vos.bench.study import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
