"""MMEngine's Runner with the checks a distillation run needs."""
import math
import re

from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import load_state_dict

from .checkpoint import fit_state_dict, read_checkpoint, state_dict_of
from .datasets import training_scale
from .hooks import ExportStudentHook
from .models import FeatureDistiller


@RUNNERS.register_module()
class DistillRunner(Runner):
    """``Runner`` that loads checkpoints strictly enough to never fail
    silently, and always exports the student after training.

    * ``load_from``, ``--resume`` and ``tools/test.py CONFIG CKPT`` map keys
      between a ``FeatureDistiller`` and a plain detector (a student-only
      checkpoint into the distiller's student, a distiller checkpoint's
      student into a plain detector) and raise when more than
      :data:`pcka_det.checkpoint.MAX_UNMATCHED` keys stay unmatched, where
      MMEngine would warn and go on with random weights.
    * Checkpoints from URLs are read with ``weights_only=True``
      (:func:`pcka_det.checkpoint.read_checkpoint`).
    * A ``FeatureDistiller`` run gets an ``ExportStudentHook`` whatever its
      ``custom_hooks`` list says.
    * ``train()`` first runs the distiller's pre-flight check
      (:meth:`FeatureDistiller.preflight`) on one dummy image of the training
      scale, before the dataloaders are built: a level that is not paired,
      a wrong connector or index, or a PCKA level of one patch fails in
      seconds.

    Every distillation config selects it with ``runner_type='DistillRunner'``
    (``configs/_base_/distill_runtime.py``); ``tools/train.py`` and
    ``tools/test.py`` use it for any config that names no runner.
    """

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        super().register_hooks(default_hooks, custom_hooks)
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        if isinstance(model, FeatureDistiller) and not any(
                isinstance(h, ExportStudentHook) for h in self.hooks):
            self.register_hook(ExportStudentHook(), priority='VERY_LOW')

    def train(self):
        """Pre-flight check of a distiller, then MMEngine's training."""
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        if isinstance(model, FeatureDistiller):
            (h, w), source = training_scale(self.cfg)
            divisor = getattr(model.data_preprocessor, 'pad_size_divisor',
                              1) or 1
            size = (math.ceil(h / divisor) * divisor,
                    math.ceil(w / divisor) * divisor)
            self.logger.info(f'Pre-flight image size {size[0]}x{size[1]} '
                             f'({source}).')
            model.preflight(size)
        return super().train()

    def load_checkpoint(self,
                        filename: str,
                        map_location='cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]) -> dict:
        """Load ``filename`` into the model (see the class docstring).

        Args:
            filename (str): Local path or URL.
            map_location: As for ``torch.load``.
            strict (bool): Passed to the final ``load_state_dict``.
            revise_keys (list): ``(pattern, replacement)`` pairs applied to
                the keys first, as in MMEngine.

        Returns:
            dict: The checkpoint.
        """
        checkpoint = read_checkpoint(filename, map_location)
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        state = state_dict_of(checkpoint, filename)
        for pattern, replacement in revise_keys:
            state = {re.sub(pattern, replacement, k): v
                     for k, v in state.items()}
        state, note = fit_state_dict(model, state, filename)
        if note:
            self.logger.info(f'{filename} is {note}.')
        # Hooks see the weights under the model's own key names: EMAHook
        # copies checkpoint['state_dict'] into its averaged model (and, when
        # resuming, swaps it with 'ema_state_dict' in place), so a
        # student-only checkpoint must already read 'student.*' here.
        checkpoint = ({**checkpoint, 'state_dict': state}
                      if 'state_dict' in checkpoint else dict(state_dict=state))
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        load_state_dict(model, checkpoint['state_dict'], strict, self.logger)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint
