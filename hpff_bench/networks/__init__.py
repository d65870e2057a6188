"""Networks as flat sequences of units (stem, blocks, head) that a split can cut anywhere."""

from hpff_bench.networks.cifar_resnet import CIFAR_RESNET_DEPTHS, cifar_resnet
from hpff_bench.networks.torchvision_resnet import TORCHVISION_RESNETS, torchvision_resnet
from hpff_bench.networks.units import NetworkSpec, UnitNetwork

# name -> (spec: cheap block layout, builder(num_classes) -> UnitNetwork)
NETWORKS: dict[str, NetworkSpec] = {
    f"resnet{d}": NetworkSpec(
        name=f"resnet{d}",
        stage_blocks=((d - 2) // 6,) * 3,
        build=lambda num_classes, d=d: cifar_resnet(d, num_classes),
    )
    for d in CIFAR_RESNET_DEPTHS
}
NETWORKS.update(
    {
        name: NetworkSpec(
            name=name,
            stage_blocks=blocks,
            build=lambda num_classes, name=name: torchvision_resnet(name, num_classes),
            family="imagenet",
        )
        for name, blocks in TORCHVISION_RESNETS.items()
    }
)


def build_network(name: str, num_classes: int) -> UnitNetwork:
    return NETWORKS[name].build(num_classes)


__all__ = ["NETWORKS", "NetworkSpec", "UnitNetwork", "build_network"]
