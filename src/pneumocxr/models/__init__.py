"""Model registry: ``create_model(name, **kw)`` and the architectures it knows.

Importing this package registers every model; heavy libraries (timm, torchvision,
efficientnet-lite) are imported only when a model that needs them is built.
"""

from pneumocxr.models import (  # noqa: F401  (registers)
    custom_cnn,
    custom_cnn_attention,
    efficientnet_lite,
    timm_backbones,
    vgg,
)
from pneumocxr.models.channels import ChannelAdapter, make_preprocess
from pneumocxr.models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from pneumocxr.models.finetune import param_groups, set_finetune
from pneumocxr.models.inputs import to_model_input
from pneumocxr.models.pretrained import load_pretrained, read_state_dict
from pneumocxr.models.registry import (
    ModelSpec,
    ModelSummary,
    PneumoModel,
    count_parameters,
    create_model,
    list_models,
    model_spec,
    num_logits,
    register_model,
    summarize_models,
)

__all__ = [
    "ChannelAdapter",
    "CheckpointMeta",
    "ModelSpec",
    "ModelSummary",
    "PneumoModel",
    "count_parameters",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_pretrained",
    "make_preprocess",
    "model_spec",
    "num_logits",
    "param_groups",
    "read_state_dict",
    "register_model",
    "save_checkpoint",
    "set_finetune",
    "summarize_models",
    "to_model_input",
]
