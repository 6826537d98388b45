"""Command-line interface: TorchGeo's LightningCLI with this package's classes registered."""

import signal

from lightning.pytorch.cli import ArgsType
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchgeo.main import main as torchgeo_main

# Imported for their side effect: LightningCLI resolves short class names
# (``class_path: DI3CLTask``) among the subclasses that have been imported.
import torchgeo_dic3l.datamodules
import torchgeo_dic3l.tasks  # noqa: F401

#: Exit status of a run stopped by SIGTERM, as the shell reports a process it killed.
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


def main(args: ArgsType = None) -> None:
    """Run the CLI (``fit``, ``validate``, ``test``, ``predict``, ``--config``, ...).

    Args:
        args: Arguments to parse instead of ``sys.argv``.

    Raises:
        SystemExit: With :data:`SIGTERM_EXIT_CODE` if the run received SIGTERM; Lightning
            stops it after the current batch (and ``ModelCheckpoint(save_on_exception=True)``
            saves), but would exit with status 0, as if it had finished.
    """
    try:
        torchgeo_main(args)
    except SIGTERMException as error:
        raise SystemExit(SIGTERM_EXIT_CODE) from error
