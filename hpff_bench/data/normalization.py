"""Per-dataset normalisation (docs/recipes.md); InfoPro's decoder reconstructs the de-normalised image."""

CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": (CIFAR_MEAN, CIFAR_STD),
    "cifar100": (CIFAR_MEAN, CIFAR_STD),
    "folder": (CIFAR_MEAN, CIFAR_STD),
    "fake": (CIFAR_MEAN, CIFAR_STD),
    "svhn": (HALF, HALF),
    "stl10": (HALF, HALF),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}
