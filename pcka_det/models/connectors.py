"""Student-side connectors that map features to the teacher's width."""
from typing import Optional

from mmcv.cnn import build_norm_layer
from torch import Tensor, nn

from mmdet.registry import MODELS
from ..options import REQUIRED, Contract, Option, declare, validate

CONTRACT = declare(Contract(
    'ConvConnector', 'model.distill_losses.<level>.connector',
    'Maps a student feature to the teacher\'s width (1x1 conv + norm); '
    'trained with the student, dropped at export.',
    options=(
        Option('in_channels', 'int', REQUIRED, 'student channels', low=1),
        Option('out_channels', 'int', REQUIRED, 'teacher channels', low=1),
        Option('norm_cfg', 'dict', dict(type='BN'), 'norm layer config; '
               'None for none', nullable=True, examples=(None, )),
    )))


@MODELS.register_module()
class ConvConnector(nn.Module):
    """1x1 convolution followed by a normalisation layer.

    Args:
        in_channels (int): Student channels.
        out_channels (int): Teacher channels.
        norm_cfg (dict, optional): Norm layer config; None for no norm.
            Defaults to ``dict(type='BN')``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 norm_cfg: Optional[dict] = dict(type='BN')) -> None:
        validate('ConvConnector', dict(in_channels=in_channels,
                                       out_channels=out_channels,
                                       norm_cfg=norm_cfg), 'ConvConnector')
        super().__init__()
        self.in_channels = in_channels
        self.conv = nn.Conv2d(
            in_channels, out_channels, 1, bias=norm_cfg is None)
        self.norm = (
            build_norm_layer(norm_cfg, out_channels)[1]
            if norm_cfg is not None else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)``."""
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'Connector expects {self.in_channels} input channels, got a '
                f'feature of shape {tuple(x.shape)}; fix in_channels.')
        return self.norm(self.conv(x))
