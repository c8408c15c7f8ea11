"""Entry point: ``python bench/train_step.py --out bench/results`` runs ``vos.bench.train_step``; see that
module for what is measured and the options."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vos.bench.train_step import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
