"""The segmentation model: ``features = backbone(x); logits = head(features, x)``, or a
U-Net trained from scratch."""

from __future__ import annotations

from torch import Tensor, nn

from bloomseg.backbone import PATCH_SIZE
from bloomseg.backbone.vit import DinoVisionTransformer
from bloomseg.model.heads import build_head, head_layers
from bloomseg.model.size import SizeHead
from bloomseg.model.unet import UNet


class SegmentationModel(nn.Module):
    """A frozen (or partly fine-tuned) ViT backbone under a head, or a from-scratch U-Net.

    Args:
        head: head name (``linear``, ``transposed_conv``, ``fusion``) or ``unet``.
        backbone: the ViT; required for a head, must be None for ``unet``.
        out_channels: logit channels (channel 0 = cell).
        unfreeze_blocks: fine-tune the last N backbone blocks (and the final norm, which
            every returned layer passes through); 0 keeps the backbone frozen.
        unet_levels: resolution levels of the ``unet`` (widths 16, 32, 64, ...); five
            see about 190 px, two cells across.
        size_head: also read the cells' size (:class:`~bloomseg.model.size.SizeHead`,
            from the U-Net's deepest level or the ViT's last layer).

    The backbone always runs in eval mode: frozen parts must not change, and DINOv2 has
    no dropout or batch statistics that training mode would use.
    """

    def __init__(self, head: str, backbone: DinoVisionTransformer | None = None,
                 out_channels: int = 1, unfreeze_blocks: int = 0, unet_levels: int = 5,
                 size_head: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.size_head: SizeHead | None = None
        self.fixed: list[nn.Module] = []  # kept in eval mode (see freeze)
        if head == "unet":
            if backbone is not None or unfreeze_blocks:
                raise ValueError("the unet model has no backbone to pass or unfreeze")
            self.backbone, self.layers = None, []
            self.head: nn.Module = UNet(out_channels, tuple(16 * 2**i for i in range(unet_levels)))
            if size_head:
                self.size_head = SizeHead(self.head.deep_channels)
            return
        if backbone is None:
            raise ValueError(f"head {head!r} needs a backbone")
        depth = len(backbone.blocks)
        if not 0 <= unfreeze_blocks <= depth:
            raise ValueError(f"unfreeze_blocks {unfreeze_blocks} not in 0..{depth}")
        self.backbone = backbone
        self.layers = head_layers(head, depth)
        self.head = build_head(head, backbone.embed_dim, out_channels)
        if size_head:
            self.size_head = SizeHead(backbone.embed_dim)
        backbone.requires_grad_(False)
        if unfreeze_blocks:
            backbone.blocks[depth - unfreeze_blocks:].requires_grad_(True)
            backbone.norm.requires_grad_(True)
        self.train()

    @property
    def grid(self) -> int:
        """px: windows of an image must start on this grid to see it as the whole image
        does (the ViT's patches, the U-Net's pooling)."""
        return PATCH_SIZE if self.backbone is not None else self.head.multiple

    @property
    def reach(self) -> int:
        """px of context that can change an output pixel: a ViT model's heads see about
        8 patches; a U-Net its receptive field."""
        return 8 * PATCH_SIZE if self.backbone is not None else self.head.reach

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()
        for module in self.fixed:
            module.eval()
        return self

    def freeze(self, part: str) -> None:
        """Leave part of the model as it is while the rest trains (fine-tuning on a few
        images without forgetting the rest).

        Args:
            part: ``norms``: every batch norm keeps its statistics (its scale and shift
                still train); ``encoder``: the U-Net's down path keeps its weights and
                statistics (a ViT backbone is frozen already); ``encoder+norms``: both;
                ``none``.
        """
        parts = set(part.split("+")) - {"none"}
        if parts - {"norms", "encoder"}:
            raise ValueError(f"freeze {part!r}: not one of none, norms, encoder, encoder+norms")
        if "norms" in parts:
            self.fixed += [m for m in self.head.modules() if isinstance(m, nn.BatchNorm2d)]
        if "encoder" in parts and self.backbone is None:
            self.head.down.requires_grad_(False)
            self.fixed.append(self.head.down)
        self.train(self.training)

    def features(self, x: Tensor) -> list[Tensor]:
        """Backbone feature maps the head reads: ``len(self.layers)`` x (B, D, H/14, W/14).

        Rounded to float16 precision (and returned as contiguous float32): the feature
        cache stores float16, and rounding here too makes a cached run and a live one
        agree exactly (the memory layout matters as well: convolutions round differently
        on a transposed one).
        """
        if self.backbone is None:
            raise ValueError("the unet model has no backbone features")
        maps = self.backbone.forward_intermediates(x, self.layers)
        return [f.half().float().contiguous() for f in maps]

    def forward_head(self, features: list[Tensor], x: Tensor) -> Tensor:
        """Logits from precomputed (e.g. cached) features and the image: (B, C, H, W)."""
        return self.head(features, x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised image -> (B, C, H, W) logits. For a ViT backbone, H and W
        must be multiples of 14."""
        if self.backbone is None:
            return self.head(x)
        return self.forward_head(self.features(x), x)

    def forward_sized(self, x: Tensor, features: list[Tensor] | None = None
                      ) -> tuple[Tensor, Tensor]:
        """Logits and the size reading of each input.

        Args:
            x: (B, 3, H, W) normalised image (multiples of 14 for a ViT backbone).
            features: the backbone's feature maps of ``x`` where already at hand (cached).

        Returns:
            ((B, C, H, W) logits, (B,) log(cells' diameter / the model's cell diameter)).

        Raises:
            ValueError: the model has no size head.
        """
        if self.size_head is None:
            raise ValueError("this model has no size head")
        if self.backbone is None:
            logits, deep = self.head(x, deepest=True)
        else:
            features = self.features(x) if features is None else features
            logits, deep = self.forward_head(features, x), features[-1]
        # the foreground weighting is the network's own call, not a path for the size
        # loss to change the segmentation through
        return logits, self.size_head(deep, logits[:, :1].detach().sigmoid())

    def parameter_groups(self, lr: float, backbone_lr_scale: float = 0.1) -> list[dict]:
        """Optimizer groups: the head at ``lr``, fine-tuned backbone parts at a lower rate."""
        own = [p for p in self.head.parameters() if p.requires_grad]
        if self.size_head is not None:
            own += list(self.size_head.parameters())
        groups = [{"params": own, "lr": lr}]
        if self.backbone is not None:
            tuned = [p for p in self.backbone.parameters() if p.requires_grad]
            if tuned:
                groups.append({"params": tuned, "lr": lr * backbone_lr_scale})
        return groups
