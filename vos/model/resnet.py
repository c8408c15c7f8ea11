"""ResNet trunks (stem + layer1..3, no layer4/fc) with frozen-statistics BatchNorm.

The blocks are torchvision's ``BasicBlock``/``Bottleneck`` (v1.5: stride on the 3×3 conv, as in XMem),
so parameter names and ImageNet weights match torchvision's and XMem's checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from vos.errors import CheckpointError

_LAYOUT = {
    "resnet18": (BasicBlock, (2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6)),
}


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose statistics never update: always normalises with the running mean/var.

    XMem trains with BN in eval mode; the affine weight and bias still learn. ``train()``
    keeps this module in eval mode whatever the parent asks, so ``model.train()`` cannot unfreeze it.
    Same state-dict keys as ``nn.BatchNorm2d`` (num_batches_tracked included).

    ``update_statistics`` (set by :func:`update_batchnorm_statistics_`) turns it back into an ordinary
    BatchNorm for training from random initialisation: there the running statistics are the identity
    (mean 0, variance 1), so frozen BN would leave the ResNet without any normalisation.
    """

    update_statistics: bool = False

    def train(self, mode: bool = True) -> "FrozenBatchNorm2d":
        return super().train(mode and self.update_statistics)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # only reachable with update_statistics
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def update_batchnorm_statistics_(module: nn.Module) -> int:
    """Let every FrozenBatchNorm2d in ``module`` normalise with batch statistics in train mode and
    update its running statistics (as ``nn.BatchNorm2d``); eval mode still uses the running ones.
    Returns how many layers were switched. Call before ``module.train()``."""
    count = 0
    for m in module.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.update_statistics = True
            count += 1
    return count


def make_layers(arch: str) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    """layer1 (stride 4), layer2 (stride 8), layer3 (stride 16) of a torchvision-style ResNet."""
    block, counts = _LAYOUT[arch]
    inplanes = 64
    layers = []
    for planes, count, stride in zip((64, 128, 256), counts, (1, 2, 2)):
        out = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False), FrozenBatchNorm2d(out)
            )
        blocks = [block(inplanes, planes, stride, downsample, norm_layer=FrozenBatchNorm2d)]
        blocks += [block(out, planes, norm_layer=FrozenBatchNorm2d) for _ in range(count - 1)]
        layers.append(nn.Sequential(*blocks))
        inplanes = out
    return layers[0], layers[1], layers[2]


def init_resnet_(module: nn.Module) -> None:
    """He-normal (fan-out) convs, unit BN — torchvision's and XMem's ResNet initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def fetch_imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights (IMAGENET1K_V1, as XMem) for ``arch``; downloads once into the
    torch hub cache. Raises CheckpointError when they cannot be had (offline, blocked, corrupt)."""
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    weights = {"resnet18": ResNet18_Weights.IMAGENET1K_V1, "resnet50": ResNet50_Weights.IMAGENET1K_V1}[arch]
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # network, hash and unpickling failures all mean "not available"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"cannot get ImageNet weights for {arch} from {weights.url} ({reason}); "
            "connect to the internet once (they are cached by torch.hub), or set model.pretrained=false, "
            "or pass --weights with a local checkpoint"
        ) from None


def trunk_imagenet_weights(arch: str, in_channels: int = 3) -> dict[str, torch.Tensor]:
    """ImageNet weights for a trunk with attribute names conv1/bn1/layer1..3 (layer4/fc dropped).

    With ``in_channels`` > 3 the extra input channels of conv1 get orthogonal-initialised weights, as
    XMem does for the value encoder's mask channels (so they start informative, not silent).
    """
    source = fetch_imagenet_state_dict(arch)
    out = {k: v for k, v in source.items() if not k.startswith(("layer4.", "fc."))}
    if in_channels > 3:
        conv1 = out["conv1.weight"]
        extra = torch.empty(conv1.shape[0], in_channels - 3, *conv1.shape[2:], dtype=conv1.dtype)
        nn.init.orthogonal_(extra)
        out["conv1.weight"] = torch.cat([conv1, extra], 1)
    return out
