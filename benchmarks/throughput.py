"""Env-steps/s of every registered lmgym env: single, SyncVectorEnv, native vector, SB3 adapter.

    python benchmarks/throughput.py            # full run (real data from $LMGYM_DATA_DIR)
    python benchmarks/throughput.py --quick    # short run on the bundled sample data

Same as ``lmgym bench`` except that it writes ``benchmarks/results/throughput.json`` (the
file ``python -m benchmarks.report`` reads) unless ``--output`` says otherwise; the logic
lives in :mod:`lmgym.bench`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lmgym.bench import main

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "throughput.json"

if __name__ == "__main__":
    sys.exit(main(["--output", str(DEFAULT_OUTPUT), *sys.argv[1:]]))
