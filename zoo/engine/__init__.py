"""Training and evaluation: the model families as tasks (``task``, ``families``), the
sub-batch accumulation they share, the trainer, the evaluator (with TTA), prediction files
and the training samples. The commands in :mod:`zoo.cli` drive it."""
