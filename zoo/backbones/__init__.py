"""Backbones written for the zoo (no torchvision/timm): import from the submodules directly,
e.g. ``from zoo.backbones.vgg import VGG16``."""
