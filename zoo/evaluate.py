"""``python -m zoo.evaluate``: see :mod:`zoo.cli.evaluate` (the command) and
:mod:`zoo.engine.evaluator`. The names scripts import from ``zoo.evaluate`` stay here."""

from zoo.cli.evaluate import main
from zoo.engine.evaluator import evaluate_model, measure_speed
from zoo.engine.predictions import save_predictions, write_mask_files

__all__ = ["evaluate_model", "main", "measure_speed", "save_predictions", "write_mask_files"]

if __name__ == "__main__":
    raise SystemExit(main())
