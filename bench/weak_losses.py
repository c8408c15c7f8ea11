"""Entry point: ``python bench/weak_losses.py --out bench/results`` runs ``vos.bench.weak_losses`` (the same as
``vos bench --kernels``); see that module for what is measured and the options."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vos.bench.weak_losses import main  # noqa: E402

if __name__ == "__main__":
    main()
