"""The segmentation model: ``features = backbone(x); logits = head(features, x)``."""

from __future__ import annotations

from torch import Tensor, nn

from bloomseg.heads import UNet, build_head, head_layers
from bloomseg.vit import DinoVisionTransformer


class SegmentationModel(nn.Module):
    """A frozen (or partly fine-tuned) ViT backbone under a head, or a from-scratch U-Net.

    Args:
        head: head name (``linear``, ``transposed_conv``, ``fusion``) or ``unet``.
        backbone: the ViT; required for a head, must be None for ``unet``.
        out_channels: logit channels (channel 0 = cell).
        unfreeze_blocks: fine-tune the last N backbone blocks (and the final norm, which
            every returned layer passes through); 0 keeps the backbone frozen.

    The backbone always runs in eval mode: frozen parts must not change, and DINOv2 has
    no dropout or batch statistics that training mode would use.
    """

    def __init__(self, head: str, backbone: DinoVisionTransformer | None = None,
                 out_channels: int = 1, unfreeze_blocks: int = 0) -> None:
        super().__init__()
        if head == "unet":
            if backbone is not None or unfreeze_blocks:
                raise ValueError("the unet model has no backbone to pass or unfreeze")
            self.backbone, self.layers = None, []
            self.head: nn.Module = UNet(out_channels)
            return
        if backbone is None:
            raise ValueError(f"head {head!r} needs a backbone")
        depth = len(backbone.blocks)
        if not 0 <= unfreeze_blocks <= depth:
            raise ValueError(f"unfreeze_blocks {unfreeze_blocks} not in 0..{depth}")
        self.backbone = backbone
        self.layers = head_layers(head, depth)
        self.head = build_head(head, backbone.embed_dim, out_channels)
        backbone.requires_grad_(False)
        if unfreeze_blocks:
            backbone.blocks[depth - unfreeze_blocks:].requires_grad_(True)
            backbone.norm.requires_grad_(True)
        self.train()

    def train(self, mode: bool = True) -> "SegmentationModel":
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        """Backbone feature maps the head reads: ``len(self.layers)`` x (B, D, H/14, W/14)."""
        if self.backbone is None:
            raise ValueError("the unet model has no backbone features")
        return self.backbone.forward_intermediates(x, self.layers)

    def forward_head(self, features: list[Tensor], x: Tensor) -> Tensor:
        """Logits from precomputed (e.g. cached) features and the image: (B, C, H, W)."""
        return self.head(features, x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised image -> (B, C, H, W) logits. For a ViT backbone, H and W
        must be multiples of 14."""
        if self.backbone is None:
            return self.head(x)
        return self.forward_head(self.features(x), x)

    def parameter_groups(self, lr: float, backbone_lr_scale: float = 0.1) -> list[dict]:
        """Optimizer groups: the head at ``lr``, fine-tuned backbone parts at a lower rate."""
        groups = [{"params": list(self.head.parameters()), "lr": lr}]
        if self.backbone is not None:
            tuned = [p for p in self.backbone.parameters() if p.requires_grad]
            if tuned:
                groups.append({"params": tuned, "lr": lr * backbone_lr_scale})
        return groups
