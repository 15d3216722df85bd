"""Give the teacher the batch normalised its own way.

The distiller's data preprocessor is the student's, so the batch arrives
normalised with the student's mean, std and channel order. A teacher
trained with other settings (a caffe-style BGR backbone under a
pytorch-style RGB student, say) must not see it as is.
"""
from typing import List, Optional

import torch
from torch import Tensor, nn


def _normalisation(preprocessor: nn.Module, channels: int):
    """``(mean, std, converts_channels, pad_value)`` of an mmengine
    ``ImgDataPreprocessor``; identity mean/std when it does not normalise."""
    if getattr(preprocessor, '_enable_normalize', False):
        mean = preprocessor.mean.detach().reshape(-1).double().cpu()
        std = preprocessor.std.detach().reshape(-1).double().cpu()
    else:
        mean = torch.zeros(channels, dtype=torch.float64)
        std = torch.ones(channels, dtype=torch.float64)
    return (mean.expand(channels), std.expand(channels),
            bool(getattr(preprocessor, '_channel_conversion', False)),
            float(getattr(preprocessor, 'pad_value', 0)))


def describe(preprocessor: nn.Module) -> str:
    """The normalisation settings of a preprocessor, for messages."""
    mean, std, convert, _ = _normalisation(preprocessor, 3)
    return (f'mean={[round(v, 3) for v in mean.tolist()]}, '
            f'std={[round(v, 3) for v in std.tolist()]}, '
            f'channel swap={convert}')


class TeacherInputs(nn.Module):
    """Re-normalise a batch from the student's preprocessing to the teacher's.

    With ``x = (swap_s(img) - m_s) / s_s`` for the student and the teacher
    expecting ``(swap_t(img) - m_t) / s_t``, the teacher input is
    ``x[perm] * scale + shift`` per channel (``perm`` reverses the channels
    when exactly one side swaps them). Padding stays where it is, at the
    teacher's own pad value.

    Args:
        student (nn.Module): The student's data preprocessor.
        teacher (nn.Module): The teacher's data preprocessor.
        channels (int): Image channels.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module,
                 channels: int = 3) -> None:
        super().__init__()
        m_s, s_s, swap_s, _ = _normalisation(student, channels)
        m_t, s_t, swap_t, self.pad_value = _normalisation(teacher, channels)
        perm = torch.arange(channels)
        if swap_s != swap_t:
            perm = perm.flip(0)
        self.register_buffer('perm', perm, persistent=False)
        self.register_buffer(
            'scale', (s_s[perm] / s_t).float().view(1, -1, 1, 1),
            persistent=False)
        self.register_buffer(
            'shift', ((m_s[perm] - m_t) / s_t).float().view(1, -1, 1, 1),
            persistent=False)

    @staticmethod
    def needed(student: nn.Module, teacher: nn.Module,
               channels: int = 3) -> bool:
        """Whether the two preprocessors normalise differently."""
        a = _normalisation(student, channels)
        b = _normalisation(teacher, channels)
        return not (torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
                    and a[2] == b[2])

    def forward(self, inputs: Tensor,
                data_samples: Optional[List] = None) -> Tensor:
        """Map the student-normalised batch to the teacher's normalisation.

        Args:
            inputs (Tensor): ``(B, C, H, W)``, as the student's
                preprocessor returned it (padded at the bottom and right).
            data_samples (list, optional): Their ``img_shape`` metainfo
                bounds each image; without it nothing is treated as padding.

        Returns:
            Tensor: ``(B, C, H, W)`` for the teacher.
        """
        out = inputs[:, self.perm] * self.scale + self.shift
        if data_samples is None:
            return out
        height, width = inputs.shape[-2:]
        valid = torch.zeros(
            inputs.shape[0], 1, height, width, dtype=torch.bool,
            device=inputs.device)
        for i, sample in enumerate(data_samples):
            h, w = sample.metainfo.get('img_shape', (height, width))[:2]
            valid[i, :, :h, :w] = True
        return out.masked_fill(~valid, self.pad_value)
