"""Version shims, each one small and explained.

torch >= 2.6 loads checkpoints with ``weights_only=True`` by default, but
MMEngine 0.10.7 calls ``torch.load`` without the argument and its runner
checkpoints hold ``HistoryBuffer`` objects and numpy arrays (message hub,
meta). Resuming or ``load_from`` then fails. The training and test tools,
which only load checkpoints the user points them at, restore the behaviour
MMEngine was written for. Student and teacher checkpoints written by
``pcka_det.export`` hold tensors and plain meta only, so plain MMDetection
loads them without this.
"""
import os


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load`` read MMEngine runner checkpoints in this process."""
    os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')


def allow_cpu_distributed() -> None:
    """Let MMEngine's ``pytorch`` launcher start on a machine without CUDA.

    MMEngine 0.10.7 calls ``torch.cuda.set_device(local_rank)`` before
    ``init_process_group`` whatever the backend; with a CPU-only torch that
    raises. Without CUDA there is no device to select, so it becomes a no-op.
    """
    import torch
    if not torch.cuda.is_available():
        torch.cuda.set_device = lambda device: None
