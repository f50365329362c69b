"""WSDNet's padding of images whose sides are no multiple of 32 (issue 32): bottom/right,
after normalisation, with 0, i.e. the mean colour, as mmseg's training ``Pad`` (after
``Normalize``, ``pad_val=0``, bottom/right; ISDNet's DeepGlobe and Inria configs). The
oracle: the same image placed at the top-left of a larger image of the mean colour, whose
sides are multiples of 32, so that nothing is padded there."""

from __future__ import annotations

import torch

from zoo.wsdnet import WSDNet


def _small_model() -> WSDNet:
    torch.manual_seed(0)
    model = WSDNet(5, sr_channels=(4, 4, 8), aspp_channels=16, fuse_channels=16,
                   aspp_dilations=(1, 2))
    # BatchNorm with running statistics that are not the identity, so that a padded region
    # counted differently would show
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_edge_pixels_equal_those_inside_a_larger_image_of_the_pad_colour():
    model = _small_model()
    g = torch.Generator().manual_seed(1)
    h, w = 45, 70  # no multiple of 32: padded to 64 x 96
    image = torch.rand(1, 3, h, w, generator=g)
    mean = model.mean.reshape(1, 3, 1, 1)
    larger = mean.expand(1, 3, 64, 96).clone()  # what the padding claims to add
    larger[..., :h, :w] = image
    with torch.no_grad():
        edge = model(image)
        inside = model(larger)[..., :h, :w]
    # the same normalised input tensor reaches the network: equal bit for bit, the last
    # rows and columns (next to the padding) included
    assert torch.equal(edge, inside)
    # a larger image of another colour (padding on the top/left, or before normalisation
    # with black, would be other inputs) changes the edge pixels: the check can fail
    other = torch.zeros(1, 3, 64, 96)
    other[..., :h, :w] = image
    with torch.no_grad():
        moved = model(other)[..., :h, :w]
    assert not torch.allclose(moved[..., -8:, :], edge[..., -8:, :], atol=1e-4)
