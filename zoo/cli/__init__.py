"""The commands: argument parsing and one error handler each. ``python -m zoo.train``,
``zoo.evaluate``, ``zoo.infer``, ``zoo.fctl.make_refine_data`` and ``zoo.data.check`` run
them."""
