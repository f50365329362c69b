import statistics, sys, torch
from benchmarks.goals import paired_rounds
from uhrops import use_backend
from uhrops.tiling import PatchGrid, sliding_window
from monai.inferers import sliding_window_inference
x = torch.rand(1, 3, 2448, 2448, generator=torch.Generator().manual_seed(0))
grid = PatchGrid.from_stride(2448, 508, 381)
def ours():
    with use_backend("torch"):
        return sliding_window(lambda b: b, x, grid, 8)
fns = {"ours": ours, "monai": lambda: sliding_window_inference(x, (508, 508), 8, lambda b: b, overlap=0.25, mode="constant")}
with torch.no_grad():
    t = paired_rounds(fns, 15)
o, m = t["ours"], t["monai"]
q = statistics.quantiles(o, n=10)
print("ours med %.1f p90 %.1f p90/med %.2f | monai med %.1f | paired ratio %.2f | ours %s" % (statistics.median(o), q[-1], q[-1]/statistics.median(o), statistics.median(m), statistics.median(a/b for a, b in zip(m, o)), [round(v) for v in o]))
