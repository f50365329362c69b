"""Training samples that depend only on (seed, sample counter); the code lives in
:mod:`zoo.engine.samples`, these names stay importable from here."""

from zoo.engine.samples import AugmentedCrops, CounterSampler, epoch_permutation, poly_lr

__all__ = ["AugmentedCrops", "CounterSampler", "epoch_permutation", "poly_lr"]
