"""GPU benchmark runs on a borrowed machine: the bundle builder and its runner (see README.md)."""
