"""Named variants as small factories in one registry (timm-style)."""

from __future__ import annotations

from collections.abc import Callable

from models.decoders import NestedDecoder, UNetDecoder
from models.encoder import DEFAULT_CHANNELS, Encoder
from models.heads import ClassificationHead
from models.segdet import SegDetModel

_REGISTRY: dict[str, Callable[..., SegDetModel]] = {}


def register_model(fn: Callable[..., SegDetModel]) -> Callable[..., SegDetModel]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _assemble(
    decoder_cls, in_channels, num_classes, num_detect, channels, dilation_rates=None, **encoder
) -> SegDetModel:
    encoder = Encoder(in_channels, tuple(channels), dilation_rates, **encoder)
    decoder = decoder_cls(encoder.out_channels, num_classes)
    head = ClassificationHead(encoder.out_channels[-1], num_detect) if num_detect > 0 else None
    return SegDetModel(encoder, decoder, head)


@register_model
def unet(in_channels=3, num_classes=4, num_detect=3, channels=DEFAULT_CHANNELS) -> SegDetModel:
    return _assemble(UNetDecoder, in_channels, num_classes, num_detect, channels)


@register_model
def unet_nested(in_channels=3, num_classes=4, num_detect=3, channels=DEFAULT_CHANNELS) -> SegDetModel:
    return _assemble(NestedDecoder, in_channels, num_classes, num_detect, channels)


@register_model
def unet_nested_dilated(
    in_channels=3, num_classes=4, num_detect=3, channels=DEFAULT_CHANNELS, dilation_rates=(1, 2, 4, 8)
) -> SegDetModel:
    return _assemble(NestedDecoder, in_channels, num_classes, num_detect, channels, tuple(dilation_rates))


@register_model
def sa_unet(in_channels=3, num_classes=4, num_detect=3, channels=DEFAULT_CHANNELS, drop_block=(7, 0.1)) -> SegDetModel:
    """SA-UNet (Guo et al. 2021, "SA-UNet: Spatial Attention U-Net for Retinal Vessel Segmentation"): the U-Net with
    DropBlock after every encoder conv and spatial attention at the bottleneck (the paper also drops blocks in the
    decoder; here the decoder is the zoo's, so checkpoints and heads stay shared)."""
    return _assemble(UNetDecoder, in_channels, num_classes, num_detect, channels, drop_block=drop_block, attention=True)


def build_model(
    name: str,
    in_channels: int = 3,
    num_classes: int = 4,
    num_detect: int = 3,
    channels: tuple[int, ...] = DEFAULT_CHANNELS,
    **kwargs,
) -> SegDetModel:
    """Build a registered model; ``num_detect=0`` drops the detection head."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(list_models())}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return _REGISTRY[name](
        in_channels=in_channels, num_classes=num_classes, num_detect=num_detect, channels=tuple(channels), **kwargs
    )


def model_from_checkpoint(path, map_location="cpu"):
    """(model in eval mode, Settings, checkpoint dict) from a checkpoint path alone; loaded with
    ``weights_only=True`` (see ``utils.checkpoint``), so a checkpoint cannot run code."""
    from utils.checkpoint import CheckpointError, load_checkpoint, load_model_weights
    from utils.config import Settings

    state = load_checkpoint(path, map_location)
    settings = Settings.from_dict(state["settings"], source=str(path))
    if state["model_name"] != settings.name:
        raise CheckpointError(f"{path}: model name {state['model_name']!r} disagrees with settings {settings.name!r}")
    model = build_model(
        settings.name,
        num_classes=settings.num_classes,
        num_detect=settings.num_detect,
        channels=tuple(settings.channels),
    )
    load_model_weights(model, state["state_dict"], path)
    return model.eval(), settings, state
