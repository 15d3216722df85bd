"""Let MMEngine resolve ``pcka_det::`` config paths.

MMEngine only accepts ``package::path`` for packages listed in its own
module-to-package table, so importing pcka_det adds itself there. The value
is the module name on purpose: MMEngine then finds the configs through the
import path, which is right for editable and regular installs alike.
"""
from mmengine.config import utils as _config_utils

_config_utils.MODULE2PACKAGE.setdefault('pcka_det', 'pcka_det')
