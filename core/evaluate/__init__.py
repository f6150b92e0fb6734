"""Evaluation: prompt sets, automatic checks (with a sandbox for answer code), answers and ratings."""
