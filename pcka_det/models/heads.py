"""What a detector's heads predict."""
from typing import List

from torch import nn


def head_num_classes(detector: nn.Module) -> List[int]:
    """The class counts of a detector's heads (the RPN excluded).

    Args:
        detector (nn.Module): An mmdet detector.

    Returns:
        list[int]: Sorted distinct ``num_classes`` of its head modules.
    """
    found = set()
    for name, module in detector.named_modules():
        if 'rpn' in name or 'loss' in name.rsplit('.', 1)[-1]:
            continue
        count = getattr(module, 'num_classes', None)
        if isinstance(count, int) and not isinstance(count, bool):
            found.add(count)
    return sorted(found)
