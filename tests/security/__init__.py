"""Regression tests for the adversarial review (issue 18): one file per theme."""
