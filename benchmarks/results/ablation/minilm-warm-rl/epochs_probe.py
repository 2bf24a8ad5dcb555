"""Probe: is behaviour cloning on a fixed labelled set under-trained at its 4 epochs?
(The anchor's replay of the warm start's 1,024 words lifted it by ~0.08 validation F1.)

    python epochs_probe.py EPOCHS $T     # $T: agents.train flags with --warm-start N

Prints validation entity F1 (500 sentences) of the warm start alone.
"""

import json
import sys

from probe import setup

if __name__ == "__main__":
    epochs, argv = int(sys.argv[1]), sys.argv[2:]
    model, plan, _, f1 = setup([*argv, "--hp", f"pretrain_epochs={epochs}"])
    print(json.dumps({"probe": "epochs", "pretrain_epochs": epochs, "argv": argv, "val": f1()}))
