"""Tests of the benchmark tooling (results files, report, the models command)."""
