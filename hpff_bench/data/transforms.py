"""Training and test transforms per dataset (docs/recipes.md).

- CIFAR-10/100 (and `folder`, `fake`): reflect-pad 4 + random crop + horizontal flip.
- SVHN: random crop with padding 2 (no flip: digits are not mirror-symmetric).
- STL-10: random crop 96 with padding 4 + horizontal flip.
- ImageNet-style folders: random-resized crop + flip; test: resize 256/224 + centre crop.
Every pipeline ends with ToTensor and the dataset's normalisation (normalization.MEAN_STD).
"""

from __future__ import annotations

from hpff_bench.data.normalization import MEAN_STD


def build_transform(dataset: str, image_size: int, train: bool, augment: bool = True, resize: bool = False):
    """The torchvision transform for `dataset` at `image_size`.

    `resize=True` first resizes every image to image_size x image_size (ImageFolder copies whose
    images are not already that size); the torchvision datasets never need it.
    """
    from torchvision import transforms as T

    mean, std = MEAN_STD[dataset]
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    s = image_size
    if dataset == "imagenet":
        if train and augment:
            return T.Compose([T.RandomResizedCrop(s), T.RandomHorizontalFlip(), *tail])
        return T.Compose([T.Resize(round(s * 256 / 224)), T.CenterCrop(s), *tail])
    head = [T.Resize((s, s))] if resize else []
    if not (train and augment):
        return T.Compose([*head, *tail])
    if dataset == "svhn":
        aug = [T.RandomCrop(s, padding=2)]
    elif dataset == "stl10":
        aug = [T.RandomCrop(s, padding=4), T.RandomHorizontalFlip()]
    else:  # cifar10, cifar100, folder, fake
        aug = [T.RandomCrop(s, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip()]
    return T.Compose([*head, *aug, *tail])
