"""zoo.data.transforms against numpy / OpenCV oracles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.data import transforms as T


def sample(h=9, w=13, seed=0, k=5):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(3, h, w, generator=g),
            "mask": torch.randint(0, k, (h, w), generator=g), "id": "x"}


def smooth_image(h, w):
    y = np.linspace(0, 1, h)[:, None]
    x = np.linspace(0, 1, w)[None, :]
    img = np.stack([0.5 + 0.4 * np.sin(3 * x + 2 * y), 0.5 + 0.4 * np.cos(2 * x - y),
                    0.3 + 0.5 * x * y]).astype(np.float32)
    return torch.from_numpy(img)


class TestGeometric:
    @settings(max_examples=15, deadline=None)
    @given(st.integers(1, 9), st.integers(1, 9), st.integers(-5, 5))
    def test_flips_rot90_vs_numpy(self, h, w, k):
        s = sample(h, w)
        img, m = s["image"].numpy(), s["mask"].numpy()
        np.testing.assert_array_equal(T.hflip(s)["image"].numpy(), img[:, :, ::-1])
        np.testing.assert_array_equal(T.vflip(s)["mask"].numpy(), m[::-1])
        r = T.rot90(s, k)
        np.testing.assert_array_equal(r["image"].numpy(), np.rot90(img, k, axes=(1, 2)))
        np.testing.assert_array_equal(r["mask"].numpy(), np.rot90(m, k))
        assert r["id"] == "x"

    def test_rot90_matches_pil(self):
        from PIL import Image
        m = sample(6, 8)["mask"]
        pil = np.asarray(Image.fromarray(m.numpy().astype(np.uint8)).rotate(90, expand=True))
        np.testing.assert_array_equal(T.rot90({"image": torch.zeros(3, 6, 8), "mask": m}, 1)
                                      ["mask"].numpy(), pil)

    def test_crop_inside_and_padding(self):
        s = sample(6, 7)
        c = T.crop(s, 1, 2, 3, 4)
        assert torch.equal(c["image"], s["image"][:, 1:4, 2:6])
        p = T.crop(s, -1, 5, 4, 4, ignore_index=255, pad_value=0.0)
        assert p["image"].shape == (3, 4, 4)
        assert (p["mask"][0] == 255).all() and (p["mask"][:, 2:] == 255).all()
        assert torch.equal(p["mask"][1:, :2], s["mask"][0:3, 5:7])
        assert (p["image"][:, 0] == 0).all()
        with pytest.raises(ValueError, match="height"):
            T.crop(s, 0, 0, 0, 3)

    @pytest.mark.parametrize("angle", [30.0, 137.5, 90.0, 250.0])
    def test_rotate_vs_cv2(self, angle):
        h, w = 40, 52
        img = smooth_image(h, w)
        g = torch.Generator().manual_seed(0)
        mask = torch.randint(0, 4, (h // 4, w // 4), generator=g).repeat_interleave(4, 0) \
            .repeat_interleave(4, 1)
        out = T.rotate({"image": img, "mask": mask}, angle, pad_value=0.0, ignore_index=255)
        M = cv2.getRotationMatrix2D(((w - 1) * 0.5, (h - 1) * 0.5), angle, 1.0)
        ref = cv2.warpAffine(img.permute(1, 2, 0).numpy(), M, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        ref_m = cv2.warpAffine(mask.numpy().astype(np.uint8), M, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=255)
        diff = np.abs(out["image"].permute(1, 2, 0).numpy() - ref)
        assert np.median(diff) < 2e-3 and np.mean(diff) < 1e-2
        agree = (out["mask"].numpy() == ref_m).mean()
        assert agree > 0.97, agree

    def test_rotate_90_square_equals_rot90(self):
        s = sample(10, 10)
        r = T.rotate(s, 90.0)
        q = T.rot90(s, 1)
        assert torch.equal(r["mask"], q["mask"])
        torch.testing.assert_close(r["image"], q["image"], atol=1e-5, rtol=0)

    def test_resize_vs_cv2(self):
        img = smooth_image(30, 41)
        mask = sample(30, 41)["mask"]
        out = T.resize({"image": img, "mask": mask}, (17, 23))
        ref = cv2.resize(img.permute(1, 2, 0).numpy(), (23, 17), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(out["image"].permute(1, 2, 0).numpy(), ref, atol=1e-5)
        ref_m = cv2.resize(mask.numpy().astype(np.uint8), (23, 17),
                           interpolation=cv2.INTER_NEAREST_EXACT)
        np.testing.assert_array_equal(out["mask"].numpy(), ref_m)
        r = T.Resize(ratio=0.5)({"image": img, "mask": mask})
        assert r["image"].shape == (3, 15, 20) and r["mask"].dtype == torch.int64
        with pytest.raises(ValueError, match="exactly one"):
            T.Resize()


class TestPhotometric:
    def test_hsv_vs_cv2(self):
        g = torch.Generator().manual_seed(0)
        img = torch.rand(3, 16, 16, generator=g)
        img[:, 0, :4] = 0.5  # grey pixels
        img[:, 1, :4] = 0.0  # black
        ref = cv2.cvtColor(img.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2HSV)
        hsv = T.rgb_to_hsv(img).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(hsv[..., 1:], ref[..., 1:], atol=1e-5)
        dh = np.abs(hsv[..., 0] - ref[..., 0])
        assert np.minimum(dh, 360 - dh).max() < 1e-2
        back = T.hsv_to_rgb(T.rgb_to_hsv(img))
        torch.testing.assert_close(back, img, atol=1e-5, rtol=0)

    def test_distortion_vs_cv2_path(self):
        img = smooth_image(12, 14)
        out = T.photometric_distortion(img, brightness=0.05, contrast=1.3, saturation=0.7,
                                       hue=12.0, contrast_first=True)
        x = np.clip(img.permute(1, 2, 0).numpy() + 0.05, 0, 1)
        x = np.clip(x * 1.3, 0, 1)
        hsv = cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2HSV)
        hsv[..., 1] = np.clip(hsv[..., 1] * 0.7, 0, 1)
        hsv[..., 0] = (hsv[..., 0] + 12.0) % 360.0
        ref = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)
        np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), ref, atol=1e-4)

    def test_identity_and_ranges(self):
        img = smooth_image(8, 8)
        assert torch.equal(T.photometric_distortion(img), img)
        pd = T.PhotometricDistortion(generator=torch.Generator().manual_seed(1))
        for _ in range(10):
            o = pd({"image": img, "mask": torch.zeros(8, 8, dtype=torch.long)})["image"]
            assert float(o.min()) >= 0 and float(o.max()) <= 1

    def test_normalize(self):
        img = smooth_image(5, 6)
        out = T.Normalize()({"image": img})["image"]
        mean = torch.tensor(T.IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(T.IMAGENET_STD).view(3, 1, 1)
        torch.testing.assert_close(out, (img - mean) / std)
        assert torch.equal(T.Normalize(None, None)({"image": img})["image"], img)
        with pytest.raises(ValueError, match="both"):
            T.Normalize(mean=(0.5, 0.5, 0.5), std=None)
        with pytest.raises(ValueError, match="positive"):
            T.Normalize(std=(0.0, 1.0, 1.0))


class TestRandom:
    def test_reproducible_with_generator(self):
        def pipeline(seed):
            g = torch.Generator().manual_seed(seed)
            return T.Compose([T.RandomHorizontalFlip(generator=g), T.RandomRot90(generator=g),
                              T.RandomCrop(5, generator=g), T.RandomRotate(generator=g),
                              T.PhotometricDistortion(generator=g), T.Normalize()])
        s = sample(11, 11)
        a, b = pipeline(3)(s), pipeline(3)(s)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert a["image"].shape == (3, 5, 5)

    def test_random_crop_pads_small_images(self):
        s = sample(3, 4)
        out = T.RandomCrop((6, 6))(s)
        assert out["image"].shape == (3, 6, 6)
        assert (out["mask"][3:] == 255).all()

    def test_cat_max_ratio(self):
        mask = torch.zeros(40, 40, dtype=torch.long)
        mask[:, 30:] = 1
        s = {"image": torch.rand(3, 40, 40), "mask": mask}
        rc = T.RandomCrop(12, cat_max_ratio=0.75, generator=torch.Generator().manual_seed(0))
        fracs = []
        for _ in range(20):
            m = rc(s)["mask"]
            fracs.append(float((m == 0).float().mean()))
        # the unconstrained crop would be all-zero in ~60% of draws
        assert sum(f < 0.75 for f in fracs) >= 15

    def test_bad_sample(self):
        with pytest.raises(TypeError, match="sample dict"):
            T.hflip(torch.zeros(3, 4, 4))
        with pytest.raises(ValueError, match="mask"):
            T.hflip({"image": torch.zeros(3, 4, 4), "mask": torch.zeros(3, 3)})
