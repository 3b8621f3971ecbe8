"""Comparators and their records: exact text and token ids, numeric tensors under a tolerance."""
