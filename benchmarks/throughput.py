"""Env-steps/s of every registered lmgym env: single, SyncVectorEnv, native vector, SB3 adapter.

    python benchmarks/throughput.py            # full run (real data from $LMGYM_DATA_DIR)
    python benchmarks/throughput.py --quick    # short run on the bundled sample data

Same as ``lmgym bench``; the logic lives in :mod:`lmgym.bench`.
"""

from __future__ import annotations

import sys

from lmgym.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
