"""zimage-parity: stage-by-stage parity checks for Z-Image implementations."""

__version__ = "0.1.0"
