"""Command-line interface: TorchGeo's LightningCLI with this package's classes registered."""

from lightning.pytorch.cli import ArgsType
from torchgeo.main import main as torchgeo_main

# Imported for their side effect: LightningCLI resolves short class names
# (``class_path: DI3CLTask``) among the subclasses that have been imported.
import torchgeo_dic3l.datamodules
import torchgeo_dic3l.tasks  # noqa: F401


def main(args: ArgsType = None) -> None:
    """Run the CLI (``fit``, ``validate``, ``test``, ``predict``, ``--config``, ...).

    Args:
        args: Arguments to parse instead of ``sys.argv``.
    """
    torchgeo_main(args)
