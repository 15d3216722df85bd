"""MMEngine's Runner with the checks a distillation run needs."""
import os.path as osp

from mmengine.hooks import CheckpointHook
from mmengine.optim import OptimWrapper
from mmengine.registry import RUNNERS
from mmengine.runner import EpochBasedTrainLoop, Runner
from mmengine.runner.checkpoint import load_state_dict

from ..checkpoint import (CorruptCheckpointError, fit_checkpoint,
                          newest_readable, read_checkpoint)
from ..datasets import padded_training_scale
from ..models import FeatureDistiller, unwrap_model
from .guarded_optim_wrapper import GuardedOptimWrapper
from .hooks import (AtomicCheckpointHook, ExportStudentHook,
                    NonFiniteGuardHook)
from .train_loop import ExactResumeEpochBasedTrainLoop


def atomic_checkpoint_cfg(hook):
    """A ``CheckpointHook`` config turned into an ``AtomicCheckpointHook``
    one (same arguments); anything else is returned as it is."""
    if isinstance(hook, dict) and hook.get('type') in ('CheckpointHook',
                                                       CheckpointHook):
        return {**hook, 'type': AtomicCheckpointHook}
    return hook


def check_pretrained_sources(model) -> None:
    """Fail now, not after the data is loaded, when a ``Pretrained`` init of
    ``model`` needs torchvision (``torchvision://`` URLs) and it is missing.

    Args:
        model (nn.Module): A detector, before ``init_weights``.
    """
    for name, module in model.named_modules():
        inits = getattr(module, 'init_cfg', None) or []
        for init in inits if isinstance(inits, list) else [inits]:
            source = str(init.get('checkpoint', '')) if isinstance(
                init, dict) else ''
            if not source.startswith('torchvision://'):
                continue
            try:
                import torchvision  # noqa: F401
            except ImportError as e:
                raise ModuleNotFoundError(
                    f'{name or "the model"} initialises from "{source}", '
                    'which MMEngine reads through torchvision, and '
                    f'torchvision cannot be imported ({e}). Install the '
                    'torchvision built for your torch (make install does), '
                    'or set the backbone\'s init_cfg to a local file.'
                ) from e


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
    * Checkpoints are written atomically and in order
      (:class:`~pcka_det.engine.hooks.AtomicCheckpointHook` replaces MMEngine's
      ``CheckpointHook``, same arguments): a kill while saving never loses
      the previous checkpoint nor leaves ``last_checkpoint`` naming a
      broken file.
    * A plain ``OptimWrapper`` becomes a
      :class:`~pcka_det.engine.GuardedOptimWrapper` (a non-finite gradient
      skips the step) and :class:`~pcka_det.engine.hooks.NonFiniteGuardHook` logs
      the skips and stops a run whose skips go on.
    * ``EpochBasedTrainLoop`` becomes
      :class:`~pcka_det.engine.train_loop.ExactResumeEpochBasedTrainLoop`: a run
      resumed from an epoch or iteration checkpoint continues where it
      stopped, with the saved random states.
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
        default_hooks = dict(default_hooks or {})
        default_hooks['checkpoint'] = atomic_checkpoint_cfg(
            default_hooks.get('checkpoint', dict(type='CheckpointHook',
                                                 interval=1)))
        custom_hooks = [atomic_checkpoint_cfg(h) for h in custom_hooks or []]
        super().register_hooks(default_hooks, custom_hooks)
        model = unwrap_model(self.model)
        if isinstance(model, FeatureDistiller) and not any(
                isinstance(h, ExportStudentHook) for h in self.hooks):
            self.register_hook(ExportStudentHook(), priority='VERY_LOW')
        if not any(isinstance(h, NonFiniteGuardHook) for h in self.hooks):
            self.register_hook(NonFiniteGuardHook())

    def build_train_loop(self, loop):
        """MMEngine's, with ``ExactResumeEpochBasedTrainLoop`` in place of
        ``EpochBasedTrainLoop`` (same arguments)."""
        if isinstance(loop, dict) and (
                loop.get('type') in ('EpochBasedTrainLoop',
                                     EpochBasedTrainLoop)
                or ('type' not in loop and loop.get('by_epoch'))):
            loop = {k: v for k, v in loop.items() if k != 'by_epoch'}
            loop['type'] = ExactResumeEpochBasedTrainLoop
        return super().build_train_loop(loop)

    def build_optim_wrapper(self, optim_wrapper):
        """MMEngine's, with ``GuardedOptimWrapper`` in place of a plain
        ``OptimWrapper`` (same arguments): a non-finite gradient never
        reaches the weights."""
        if isinstance(optim_wrapper, dict) and optim_wrapper.get(
                'type', 'OptimWrapper') in ('OptimWrapper', OptimWrapper) \
                and 'constructor' not in optim_wrapper:
            optim_wrapper = {**optim_wrapper, 'type': GuardedOptimWrapper}
        return super().build_optim_wrapper(optim_wrapper)

    def train(self):
        """Pre-flight check of a distiller, then MMEngine's training."""
        model = unwrap_model(self.model)
        if isinstance(model, FeatureDistiller):
            check_pretrained_sources(model.student)
            size, source = padded_training_scale(self.cfg,
                                                 model.data_preprocessor)
            self.logger.info(f'Pre-flight image size {size[0]}x{size[1]} '
                             f'({source}).')
            model.preflight(size)
        return super().train()

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location='default') -> None:
        """MMEngine's resume, from the newest checkpoint that can be read.

        ``filename`` (``--resume PATH``, or what ``last_checkpoint`` names)
        is read first. If it is truncated or corrupt (or, for ``--resume``
        without a path, missing), the newest readable ``epoch_*.pth`` /
        ``iter_*.pth`` next to it is used, with a warning naming both; with
        ``resume_fallback = False`` in the config that is an error naming
        both instead. Every rank restores its own random states.
        """
        checkpoint, e = None, None
        try:
            checkpoint = read_checkpoint(filename)
        except FileNotFoundError as err:
            if self._load_from is not None:  # --resume PATH: a typo?
                raise
            e = err
        except CorruptCheckpointError as err:
            e = err
        if checkpoint is None:
            fallback, checkpoint = newest_readable(
                osp.dirname(osp.abspath(filename)), exclude=filename)
            if fallback is None:
                raise e
            if not self.cfg.get('resume_fallback', True):
                raise RuntimeError(
                    f'Cannot resume from "{filename}": {e} The newest '
                    f'readable checkpoint is "{fallback}"; resume from it '
                    f'(--resume {fallback}) or set resume_fallback=True.'
                ) from e
            self.logger.warning(
                f'Cannot resume from "{filename}" ({e}); resuming from the '
                f'newest readable checkpoint, "{fallback}", instead.')
            filename = fallback
        self._preloaded = (filename, checkpoint)
        try:
            super().resume(filename, resume_optimizer,
                           resume_param_scheduler, map_location)
        finally:
            self._preloaded = None
        if isinstance(self._train_loop, ExactResumeEpochBasedTrainLoop):
            self._train_loop.pending_rng_state = self._own_rng_state(
                checkpoint.get('rng_state'))
            loader = self.cfg.get('train_dataloader') or {}
            if checkpoint.get('rng_state') is None:
                self.logger.warning(
                    f'{filename} holds no random states (written by another '
                    'tool?): random augmentation after the resume differs '
                    'from an uninterrupted run.')
            elif loader.get('persistent_workers') and \
                    loader.get('num_workers', 0) > 0:
                self.logger.warning(
                    'Resuming with persistent_workers=True: the data '
                    'workers\' random streams cannot be restored, so random '
                    'augmentation after the resume differs from an '
                    'uninterrupted run (set persistent_workers=False for a '
                    'bit-exact resume).')

    def _own_rng_state(self, states):
        """This rank's random states from a checkpoint's list (one per rank
        of the run that saved it)."""
        if isinstance(states, dict):  # a single process's
            states = [states]
        if not states:
            return None
        if len(states) != self.world_size:
            self.logger.warning(
                f'The checkpoint was saved by {len(states)} processes, this '
                f'run has {self.world_size}: the data order and random '
                'augmentation after the resume differ from an uninterrupted '
                'run.')
        return states[min(self.rank, len(states) - 1)]

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
        preloaded = getattr(self, '_preloaded', None)
        if preloaded is not None and preloaded[0] == filename:
            checkpoint = preloaded[1]  # read (and checked) by resume()
        else:
            checkpoint = read_checkpoint(filename, map_location)
        model = unwrap_model(self.model)
        state, note = fit_checkpoint(model, checkpoint, filename,
                                     revise_keys=revise_keys)
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
