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
