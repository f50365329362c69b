import cProfile, pstats, torch, time
from pathlib import Path
from tests.zoo.test_infer_geo import write_geotiff, cheap_task, settings
from zoo.engine import segment_file as sf
tmp = Path("/tmp/geo_prof"); tmp.mkdir(exist_ok=True)
t=time.time(); write_geotiff(tmp / "scene.tif", 3000, 2900, nodata_box=(100, 2500, 700, 2900)); print("write", time.time()-t)
for sets in (["eval.sliding=true", "eval.max_memory=1000.0"], ["eval.max_memory=0.001"]):
    task, model = cheap_task(*sets)
    pr = cProfile.Profile(); pr.enable(); t=time.time()
    sf.segment_file(task, model, str(tmp / "scene.tif"), str(tmp / "o"), settings(outputs=("tif","probs","mask","color")), torch.device("cpu"))
    pr.disable(); print(sets, time.time()-t)
    pstats.Stats(pr).sort_stats("cumtime").print_stats(18)
