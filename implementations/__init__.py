"""Implementations of the Z-Image pipeline, each behind a parity adapter."""
