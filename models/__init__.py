"""Model zoo: ``unet``, ``unet_nested`` (UNet++) and ``unet_nested_dilated`` on one encoder and one head."""

from models.registry import build_model, list_models, model_from_checkpoint, register_model
from models.segdet import SegDetModel, SegDetOutput

__all__ = ["SegDetModel", "SegDetOutput", "build_model", "list_models", "model_from_checkpoint", "register_model"]
