"""The bottom layer of the zoo: errors, files written atomically, checkpoints, RNG states,
weight-file cleaning, the device/precision runtime, progress reporting and process groups.

Nothing here imports another part of ``zoo``; every other part may import from here.
"""
