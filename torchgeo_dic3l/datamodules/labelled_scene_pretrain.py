"""Pre-training on one's own scene: the images of a labelled scene's training region."""

from typing import cast

from torch.utils.data import Dataset
from torchgeo.datasets.utils import Sample

from ..datasets.labelled_scene import LabelledSARScene
from .labelled_scene import LabelledSARSceneDataModule


class ImagesOnly(Dataset[Sample]):
    """A dataset's samples with the ``image`` entry alone (masks dropped)."""

    def __init__(self, dataset: LabelledSARScene) -> None:
        """Wrap a labelled scene split.

        Args:
            dataset: The split.
        """
        self.dataset = dataset

    def __len__(self) -> int:
        """Return the number of patches.

        Returns:
            The length of the wrapped split.
        """
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        """Return the image of one patch.

        Args:
            index: Patch index.

        Returns:
            ``{"image": float32 [C, p, p]}`` in dB.
        """
        return {"image": self.dataset[index]["image"]}


class LabelledSARScenePretrainDataModule(LabelledSARSceneDataModule):
    """Unlabelled patches of a labelled scene's training and validation regions.

    Pre-training on the scene one will segment is what PolSAR users do. With the same
    scene and split arguments as the :class:`LabelledSARSceneDataModule` of the
    downstream benchmark, the split is the same, so the test region is never seen;
    masks are dropped, so no label is used for learning. (The split keeps only
    patches with at least one labelled pixel, so labels do decide which patches of
    the training region exist, as they do downstream.) All training patches are
    used whatever ``label_fraction`` says, and the dB normalization is the training
    region's 2-98 % range unless ``low``/``high`` are given.
    """

    def setup(self, stage: str) -> None:
        """Build the image-only datasets of the training and validation regions.

        Args:
            stage: ``"fit"`` or ``"validate"``; a scene pre-training has no test stage.

        Raises:
            ValueError: If ``stage`` is ``"test"`` or ``"predict"``: the test region
                must stay unseen.
        """
        if stage not in ("fit", "validate"):
            raise ValueError(
                f"LabelledSARScenePretrainDataModule has no {stage!r} stage: the scene's "
                "test region stays unseen until the downstream benchmark"
            )
        self.kwargs["label_fraction"] = 1.0
        super().setup(stage)
        val = cast(LabelledSARScene, self.val_dataset)
        self.val_dataset = ImagesOnly(val)
        if stage == "fit":
            train = cast(LabelledSARScene, self.train_dataset)
            self.train_dataset = ImagesOnly(train)
            print(
                f"LabelledSARScenePretrainDataModule: {len(train)} training and {len(val)} "
                f"validation patches of {train.patch_size} px (masks dropped); no test "
                "patch is served"
            )
