"""FCtL's released input pipeline, byte for byte (issue 23): contexts, global image, labels.

The oracle is PIL called here the way the released ``helper.py`` calls it
(reference/fctl.md §6.4): ``ImageOps.expand`` pads the 8-bit image with black, ``crop`` cuts the
mul·508 window at the patch's corner in padded coordinates, ``resize((508, 508), BILINEAR)``;
the DeepGlobe global image is ``image.resize((508, 508), BILINEAR)``; labels are shrunk with
``resize(..., NEAREST)``. Compared uint8-exact on the real images of ../shared/data.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tests.zoo.test_fctl_pipeline import Probe, starts
from uhrops.tiling import PatchGrid, extract_contexts
from zoo.engine.fctl_task import shrink_labels
from zoo.fctl import FCtLSegmenter
from zoo.fctl.pipeline import released_contexts, released_resize_global


def to_tensor(img: Image.Image) -> torch.Tensor:
    """torchvision's ToTensor, written out: (1, 3, H, W) float32 = bytes / 255."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def as_bytes(t: torch.Tensor) -> np.ndarray:
    """(k, 3, h, w) in [0, 1] -> (k, h, w, 3) uint8; exact for values k/255."""
    return (t * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def pil_contexts(img: Image.Image, p: int, mul: int, min_overlap: float) -> np.ndarray:
    """The released global2bigpatch: (N, p, p, 3) uint8 in row-major patch order."""
    sz = (mul - 1) * p // 2
    padded = ImageOps.expand(img, border=sz, fill="black")
    out = []
    for top in starts(img.height, p, min_overlap):
        for left in starts(img.width, p, min_overlap):
            # (top, left) in the original image = (top + sz, left + sz) in the padded one, so
            # the mul·p crop starting there is centred on the patch.
            crop = padded.crop((left, top, left + mul * p, top + mul * p))
            out.append(np.asarray(crop.resize((p, p), Image.BILINEAR)))
    return np.stack(out)


@pytest.fixture
def deepglobe_855(shared_data) -> Image.Image:
    return Image.open(os.path.join(shared_data, "deepglobe", "855_sat.jpg")).convert("RGB")


@pytest.fixture
def inria_austin(shared_data) -> Image.Image:
    return Image.open(os.path.join(shared_data, "inria", "austin_crop_sat.tif")).convert("RGB")


class TestReleasedResize:
    @pytest.mark.parametrize("which,mul", [("deepglobe_855", 3), ("inria_austin", 2),
                                           ("inria_austin", 3)])
    def test_contexts_equal_pil_on_real_images(self, which, mul, request):
        img = request.getfixturevalue(which)
        x = to_tensor(img)
        grid = PatchGrid.from_min_overlap(tuple(x.shape[-2:]), 508, 50)
        ours = released_contexts(x, grid, mul)
        ref = pil_contexts(img, 508, mul, 50)
        assert ours.shape == (len(ref), 3, 508, 508) and ours.dtype == torch.float32
        np.testing.assert_array_equal(as_bytes(ours), ref)
        # the values themselves are the bytes / 255, as ToTensor() of the PIL result
        assert torch.equal(ours, torch.from_numpy(ref).permute(0, 3, 1, 2).float() / 255.0)
        # the float path is what the mode fixes: it misses the released bytes
        floats = extract_contexts(x, grid, float(mul))
        assert not np.array_equal(as_bytes(floats), ref)

    def test_global_image_equals_pil(self, deepglobe_855):
        x = to_tensor(deepglobe_855)
        ours = released_resize_global(x, (508, 508))
        ref = np.asarray(deepglobe_855.resize((508, 508), Image.BILINEAR))
        np.testing.assert_array_equal(as_bytes(ours)[0], ref)

    def test_segmenter_feeds_the_model_the_released_inputs(self, deepglobe_855):
        # A real 150 x 130 corner (black padding on two sides) with 64 px patches, through the
        # DeepGlobe final model's inputs: x3 windows per patch and the global image.
        img = deepglobe_855.crop((0, 0, 130, 150))
        x = to_tensor(img)

        class Recorder(Probe):
            def encode_context(self, name, image):
                self.seen_global = image.clone()
                return super().encode_context(name, image)

            def forward(self, patch, contexts=(), *, context_features=None):
                self.seen.append(contexts[0].clone())
                return super().forward(patch, contexts, context_features=context_features)

        for mode, exact in (("released", True), ("float", False)):
            model = Recorder(7, "deepglobe", "full")
            model.seen = []
            seg = FCtLSegmenter(model, patch_size=64, min_overlap=8, batch_size=5,
                                context_resize=mode)
            seg(x)
            got = as_bytes(torch.cat(model.seen, 0))
            ref = pil_contexts(img, 64, 3, 8)
            glob = np.asarray(img.resize((64, 64), Image.BILINEAR))
            same = np.array_equal(got, ref) and np.array_equal(as_bytes(model.seen_global)[0],
                                                               glob)
            assert same is exact, mode

    def test_released_mode_errors(self):
        model = Probe(7, "deepglobe", "full")
        with pytest.raises(ValueError, match="context_resize"):
            FCtLSegmenter(model, context_resize="pil")
        with pytest.raises(ValueError, match="pad_value=0"):
            FCtLSegmenter(model, context_resize="released", pad_value=0.5)
        seg = FCtLSegmenter(model, patch_size=16, min_overlap=4, context_resize="released")
        with pytest.raises(ValueError, match=r"\[0, 1\].*mean"):
            seg(torch.rand(1, 3, 20, 20) * 2 - 0.5)


class TestLabelShrink:
    def test_equals_pil_nearest_on_a_real_mask(self, shared_data):
        mask = Image.open(os.path.join(shared_data, "deepglobe", "855_mask.png")).convert("RGB")
        # any single-channel class map will do: the red channel binarised, plus a diagonal
        # ramp so that every sampled position is told apart from its neighbours
        m = (np.asarray(mask)[..., 0] >= 128).astype(np.uint8)
        m = (m + np.add.outer(np.arange(m.shape[0]), np.arange(m.shape[1]))[:] % 97 * 2)
        m = m.astype(np.uint8)
        for size in ((508, 508), (127, 300), (1000, 50)):
            ref = np.asarray(Image.fromarray(m).resize(size[::-1], Image.NEAREST))
            ours = shrink_labels(torch.from_numpy(m)[None].long(), size)
            assert ours.dtype == torch.int64
            np.testing.assert_array_equal(ours[0].numpy(), ref)
            # "nearest" (the old choice) samples other pixels (the 2448 -> 300 and 1000 axes
            # also hold centres on pixel borders, where PIL's rounding decides)
            old = torch.nn.functional.interpolate(torch.from_numpy(m)[None, None].float(),
                                                  size=size, mode="nearest")[0, 0]
            assert not np.array_equal(old.long().numpy(), ref)

    def test_ties_are_rounded_as_pil_does(self):
        # 2448 -> 300: output column 12 is centred exactly on the border of columns 101 and
        # 102; PIL takes 101, floor((i + 0.5) * 2448 / 300) (torch's "nearest-exact") 102.
        ramp = torch.arange(2448).repeat(2, 1)
        ref = np.asarray(Image.fromarray(ramp.numpy().astype(np.int32)).resize(
            (300, 2), Image.NEAREST))
        ours = shrink_labels(ramp[None], (2, 300))[0]
        np.testing.assert_array_equal(ours.numpy(), ref)
        exact = torch.nn.functional.interpolate(ramp[None, None].double(), size=(2, 300),
                                                mode="nearest-exact")[0, 0].long()
        assert int(ours[0, 12]) == 101 and int(exact[0, 12]) == 102

    def test_global_stage_step_uses_it(self):
        from zoo.config import load_config
        from zoo.engine.families import make_task

        cfg = load_config("fctl_deepglobe_global", [])
        cfg["fctl"]["patch_size"] = 16
        task = make_task(cfg)
        seen = []

        def loss_fn(logits, target):
            seen.append(target)
            return logits.sum() * 0

        model = Probe(7, "deepglobe", "global")
        mask = torch.randint(0, 7, (1, 61, 45), generator=torch.Generator().manual_seed(0))
        task.step(model, loss_fn, torch.rand(1, 3, 61, 45), mask, contextlib.nullcontext)
        ref = np.asarray(Image.fromarray(mask[0].numpy().astype(np.uint8)).resize(
            (16, 16), Image.NEAREST))
        np.testing.assert_array_equal(seen[0][0].numpy(), ref)


# ------------------------------------------------------------------------------------------
# Stage starts from released .pth files (model.init, fctl.context_checkpoints)
# ------------------------------------------------------------------------------------------


def released_file(path, variant: str, stage: str, n: int, seed: int) -> dict:
    """Write a released-format checkpoint of ``stage`` (DataParallel names, aliases, the
    ImageNet classifier) and return {official key: value}. Every tensor is one random number
    broadcast to its shape: the file stays a few kB although conv6 alone is 103 M weights, and
    each key is still told apart from the others."""
    from tests.zoo.test_fctl import meta_model, official_names

    g = torch.Generator().manual_seed(seed)
    model = meta_model(n, variant, stage)
    sd, values = {}, {}
    for key, t in model.state_dict().items():
        if key.startswith("context_encoders."):
            continue
        v = float(torch.rand((), generator=g))
        tensor = torch.tensor(v).expand(t.shape)
        for name in official_names(model, key):
            sd["module." + name] = tensor
            values[name] = v
        if key.startswith("encoder.features.") and stage == "single_context":
            # stage-2 models hold the shared encoder a third time, as big_pool*
            for name in official_names(model, key):
                if name.startswith("pool"):
                    sd["module.big_" + name] = tensor
    for j in (0, 3, 6):
        sd[f"module.vgg.classifier.{j}.weight"] = torch.zeros(2, 2)
    torch.save({"state_dict": sd}, path)
    return values


def const(t: torch.Tensor) -> float:
    """The single value of a tensor filled with one number (else NaN)."""
    t = t.detach()
    return float(t.flatten()[0]) if bool((t == t.flatten()[0]).all()) else float("nan")


def task_for(config: str, *overrides: str):
    from zoo.config import load_config
    from zoo.engine.families import make_task

    return make_task(load_config(config, ["fctl.init_stage=null", *overrides]))


class TestReleasedStageStarts:
    """The released scripts (reference/fctl.md §5) and the file each stage starts from."""

    def test_deepglobe_final_stage_from_afcn_partially(self, tmp_path, capsys):
        from zoo.core.errors import CheckpointError

        afcn = released_file(tmp_path / "Afcn.epoch.pth", "deepglobe", "fcn", 7, 1)
        medium = released_file(tmp_path / "medium.epoch.pth", "deepglobe", "single_context", 7, 2)
        glob = released_file(tmp_path / "global.epoch.pth", "deepglobe", "global", 7, 3)
        task = task_for("fctl_deepglobe_full", "model.init_partial=true",
                        f"fctl.context_checkpoints=[{tmp_path / 'medium.epoch.pth'}, "
                        f"{tmp_path / 'global.epoch.pth'}]")
        model = task.build_model()
        # the frozen encoders come from the released medium and global files
        assert const(model.context_encoders["medium"].features[28].weight) == \
            pytest.approx(medium["pool5.4.weight"])
        assert const(model.context_encoders["large"].features[0].bias) == \
            pytest.approx(glob["pool3.0.bias"])
        fresh = {k: v.clone() for k, v in model.state_dict().items()
                 if k.startswith(("correlations.", "fusion."))}
        with pytest.raises(CheckpointError, match="partial=True"):
            task.load_weights(model, str(tmp_path / "Afcn.epoch.pth"))
        task.load_weights(model, str(tmp_path / "Afcn.epoch.pth"), partial=True)
        assert const(model.encoder.features[0].weight) == pytest.approx(afcn["pool3.0.weight"])
        assert const(model.encoder.conv6.weight) == pytest.approx(afcn["output.0.weight"])
        assert const(model.decoder.score_pool4.bias) == pytest.approx(afcn["adj_pool4.bias"])
        for k, v in fresh.items():  # the 32 correlation and fusion tensors keep their init
            assert torch.equal(model.state_dict()[k], v), k
        err = capsys.readouterr().err
        assert "32 stayed initialised" in err and "fusion.trans.weight" in err
        # a released file holds no context encoders: the final stage needs them named
        from zoo.core.errors import ConfigError

        bare = task_for("fctl_deepglobe_full", "fctl.context_checkpoints=[]")
        with pytest.raises(ConfigError, match="context_checkpoints"):
            bare.load_weights(bare.build_model(), str(tmp_path / "Afcn.epoch.pth"), True)

    @pytest.mark.parametrize("config,variant,n", [("fctl_deepglobe_medium", "deepglobe", 7),
                                                  ("fctl_inria_ctx2", "inria", 2),
                                                  ("fctl_inria_ctx3", "inria", 2)])
    def test_context_stages_from_the_fcn_stage(self, tmp_path, capsys, config, variant, n):
        fcn = released_file(tmp_path / "fcn.pth", variant, "fcn", n, 4)
        task = task_for(config, "model.init_partial=true")
        model = task.build_model()
        corr = {k: v.clone() for k, v in model.correlations.state_dict().items()}
        task.load_weights(model, str(tmp_path / "fcn.pth"), partial=True)
        assert const(model.encoder.features[24].weight) == pytest.approx(fcn["pool5.0.weight"])
        assert const(model.decoder.score.weight) == pytest.approx(fcn["output.6.weight"])
        for k, v in model.correlations.state_dict().items():
            assert torch.equal(v, corr[k]), k
        assert f"{len(corr)} stayed initialised" in capsys.readouterr().err

    def test_inria_final_stage_from_b10_completely(self, tmp_path):
        b10 = released_file(tmp_path / "B10.pth", "inria", "full", 2, 5)  # all three branches
        released_file(tmp_path / "B10c.pth", "inria", "single_context", 2, 6)
        b15 = released_file(tmp_path / "B15c.pth", "inria", "single_context", 2, 7)
        task = task_for("fctl_inria_full",
                        f"fctl.context_checkpoints=[{tmp_path / 'B10c.pth'}, "
                        f"{tmp_path / 'B15c.pth'}]")
        model = task.build_model()
        task.load_weights(model, str(tmp_path / "B10.pth"))  # strict: nothing may be missing
        assert const(model.correlations["large"].conv_key.weight) == \
            pytest.approx(b10["big_attention.conv_key_1.weight"])
        assert const(model.fusion.trans.bias) == pytest.approx(b10["big_attention.trans.bias"])
        assert const(model.context_encoders["large"].features[2].weight) == \
            pytest.approx(b15["pool3.2.weight"])

    def test_config_errors(self, tmp_path):
        from tests.zoo.test_fctl import meta_model
        from zoo.core.errors import ConfigError

        released_file(tmp_path / "Afcn.pth", "deepglobe", "fcn", 7, 8)
        with pytest.raises(ConfigError, match="model.init"):
            task_for("fctl_deepglobe_medium",
                     f"fctl.init_stage={tmp_path / 'Afcn.pth'}").build_model()
        with pytest.raises(ConfigError, match="context_resize"):
            task_for("fctl_deepglobe_full", "fctl.context_resize=pil")
        # a partial start is the released recipe: a zoo checkpoint (told by its name or header,
        # here one that is not even readable) is refused before anything is read
        zoo_file = tmp_path / "best.safetensors"
        zoo_file.write_bytes(b"not a checkpoint")
        task = task_for("fctl_deepglobe_medium")
        with pytest.raises(ConfigError, match="init_stage"):
            task.load_weights(meta_model(7, "deepglobe", "single_context"), str(zoo_file),
                              partial=True)
        from zoo.config import load_config as _load
        from zoo.engine.families import make_task
        with pytest.raises(ConfigError, match="init_partial"):  # other families: never partial
            make_task(_load("quickstart", [])).load_weights(None, str(zoo_file), partial=True)
        # the global stage starts from ImageNet VGG16 (train_global.sh has no --pre_path)
        from zoo.config import load_config
        assert load_config("fctl_deepglobe_global", [])["fctl"]["init_stage"] is None
        assert load_config("fctl_deepglobe_full", [])["fctl"]["context_resize"] == "released"


def _released_views(img: Image.Image) -> list[tuple[bool, int, Image.Image]]:
    """The released Evaluator.eval_test's 8 views, made with PIL: rotate(90) (counter-
    clockwise) k times, then hflip of the image and rotate(90) k times again."""
    views = []
    for flip in (False, True):
        base = img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img
        for k in range(4):
            view = base
            for _ in range(k):
                view = view.transpose(Image.ROTATE_90)
            views.append((flip, k, view))
    return views


def test_released_tta_matches_the_released_views_one_by_one():
    """DeepGlobe final model, context_resize="released", tta=True, on a non-square image
    whose sides are no multiple of the patch: per view, the patches, the x3 windows and the
    global image the network sees equal the released evaluation's, made with PIL (the global
    image resized ONCE from the image, then flipped/rotated with the view); the merged
    result equals the released sum of the views' logits turned back."""
    rng = np.random.default_rng(5)
    img = Image.fromarray(rng.integers(0, 256, (45, 37, 3), dtype=np.uint8))
    p, overlap = 16, 4

    class Recorder(Probe):
        def encode_context(self, name, image):
            self.globals.append(image.clone())
            return super().encode_context(name, image)

        def forward(self, patch, contexts=(), *, context_features=None):
            self.patches.append(patch.clone())
            self.windows.append(contexts[0].clone())
            return super().forward(patch, contexts, context_features=context_features)

    model = Recorder(3, "deepglobe", "full")
    model.globals, model.patches, model.windows = [], [], []
    seg = FCtLSegmenter(model, patch_size=p, min_overlap=overlap, batch_size=100,
                        context_resize="released", tta=True)
    total = seg(to_tensor(img))
    views = _released_views(img)
    assert len(model.globals) == len(model.patches) == len(views) == 8
    g0 = img.resize((p, p), Image.BILINEAR)  # once, from the image as given
    expected = np.zeros((1, 3, img.height, img.width))
    expected_abs = np.zeros_like(expected)
    w = model.w.detach().double().numpy()
    for i, (flip, k, view) in enumerate(views):
        gview = g0.transpose(Image.FLIP_LEFT_RIGHT) if flip else g0
        for _ in range(k):
            gview = gview.transpose(Image.ROTATE_90)
        np.testing.assert_array_equal(as_bytes(model.globals[i])[0], np.asarray(gview),
                                      err_msg=f"view {i}: global image")
        np.testing.assert_array_equal(as_bytes(model.windows[i]),
                                      pil_contexts(view, p, 3, overlap),
                                      err_msg=f"view {i}: x3 windows")
        crops = [np.asarray(view.crop((x, y, x + p, y + p)))
                 for y in starts(view.height, p, overlap) for x in starts(view.width, p, overlap)]
        np.testing.assert_array_equal(as_bytes(model.patches[i]), np.stack(crops),
                                      err_msg=f"view {i}: patches")
        # the released merge (patch2global: sum of logits), then np.rot90(k, axes=(3, 2))
        # and np.flip(axis=3) as Evaluator.eval_test turns the view's scores back
        score = np.zeros((1, 3, view.height, view.width))
        score_abs = np.zeros_like(score)  # the same sums of |terms|: the rounding bound's scale
        glob = np.asarray(gview, np.float64).transpose(2, 0, 1) / 255.0
        j = 0
        for y in starts(view.height, p, overlap):
            for x in starts(view.width, p, overlap):
                patch = np.asarray(view.crop((x, y, x + p, y + p)), np.float64).transpose(2, 0, 1)
                win = pil_contexts(view, p, 3, overlap)[j].astype(np.float64).transpose(2, 0, 1)
                feats = np.concatenate([patch / 255.0, win / 255.0, glob], 0)
                score[0, :, y:y + p, x:x + p] += np.einsum("oc,chw->ohw", w, feats)
                score_abs[0, :, y:y + p, x:x + p] += np.einsum("oc,chw->ohw", np.abs(w),
                                                               np.abs(feats))
                j += 1
        back = np.rot90(score, k=k, axes=(3, 2))
        expected += np.flip(back, axis=3) if flip else back
        back_abs = np.rot90(score_abs, k=k, axes=(3, 2))
        expected_abs += np.flip(back_abs, axis=3) if flip else back_abs
    # float32 logits of 12 inputs, summed over up to 4 overlapping patches and 8 views: at most
    # 12 + 4 + 8 roundings of 2**-24 each, relative to the sum of the terms' magnitudes (any
    # summation order, so any CPU kernel)
    bound = (12 + 4 + 8) * 2.0 ** -24 * expected_abs[0] + 1e-12
    err = np.abs(total[0].double().numpy() - expected[0])
    assert (err <= bound).all(), f"max error {err.max():.3g}, bound there {bound[err > bound]}"
