"""Export a pre-training checkpoint as a hash-named backbone weights file."""

import argparse
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import FIRST_LAYER_KEYS, extract_backbone
from .weights import sha256_of

#: Publication recorded in the metadata of exported weights: DI3CL's for DI3CLTask and
#: its ablations, unless the method has its own entry here.
PUBLICATION = "https://arxiv.org/abs/2511.07808"
PUBLICATIONS = {
    "sarmae": "https://arxiv.org/abs/2512.16635",
    "mae": "https://arxiv.org/abs/2111.06377",
}


@dataclass(frozen=True)
class ExportedWeights:
    """Where an export went and what its enum entry needs."""

    path: Path
    sha256: str
    meta: dict[str, Any]

    def enum_entry(self, url_prefix: str) -> str:
        """Python source of a ``Weights`` entry for this file, to paste into an enum.

        Args:
            url_prefix: Public folder URL the file is uploaded to, ending with ``/``.

        Returns:
            Source text of the entry.
        """
        return (
            f"{self.path.stem.rsplit('-', 1)[0].upper()} = Weights(\n"
            f"    url={url_prefix + self.path.name!r},\n"
            "    transforms=None,\n"
            f"    meta={self.meta!r},\n"
            ")"
        )


def ssl_method(hyper_parameters: dict[str, Any]) -> str:
    """Name the pre-training variant from a task's hyper-parameters.

    Args:
        hyper_parameters: ``hyper_parameters`` of the checkpoint.

    Returns:
        ``"di3cl"``, ``"mocov2"``, ``"mocov2+cc"`` or ``"mocov2+di"`` for DI3CLTask;
        ``"sarmae"`` for SARMAETask with SARE, ``"mae"`` for it without SARE or for
        TorchGeo's MAE; ``"unknown"`` for other tasks.
    """
    if "mask_ratio" in hyper_parameters:
        return "sarmae" if hyper_parameters.get("sare") else "mae"
    if "use_cc" not in hyper_parameters:
        return "unknown"
    cc, di = bool(hyper_parameters["use_cc"]), bool(hyper_parameters["use_di"])
    return {(True, True): "di3cl", (False, False): "mocov2"}.get(
        (cc, di), "mocov2+cc" if cc else "mocov2+di"
    )


def export_weights(
    checkpoint: Path | str,
    output_dir: Path | str,
    name: str,
    dataset: str,
    repo: str,
    bands: Sequence[str] = ("VV", "VH"),
) -> ExportedWeights:
    """Write the query backbone of a checkpoint as ``<name>-<sha8>.pth`` plus metadata.

    The ``.pth`` holds a plain state dict that timm (and segmentation-models-pytorch
    ResNets) load with strict key matching; a ``.json`` beside it holds the ``meta``
    of its weight enum entry (``dataset``, ``in_chans``, ``model``, ``publication``,
    ``repo``, ``ssl_method``, ``bands``, ``sha256``, and for ViTs ``img_size``, the
    side their position embedding was made for).

    Args:
        checkpoint: DI3CLTask, SARMAETask (or TorchGeo SSL task) checkpoint.
        output_dir: Folder for the weights and metadata files.
        name: Base name, e.g. ``"resnet50_sar_di3cl"``.
        dataset: Name of the pre-training data, recorded in the metadata.
        repo: Where the code that made the weights lives, recorded in the metadata.
        bands: Input bands, in channel order.

    Returns:
        The written file, its SHA-256 and its metadata.

    Raises:
        ValueError: If ``name`` is empty or contains characters unsafe in file names,
            or ``bands`` does not match the backbone's input channels.
    """
    if not name or not all(c.isalnum() or c in "_." for c in name):
        raise ValueError(f"name must be letters, digits, '_' or '.', got {name!r}")
    checkpoint = Path(checkpoint)
    state_dict = extract_backbone(checkpoint)
    hyper_parameters: dict[str, Any] = torch.load(
        checkpoint, map_location="cpu", weights_only=True
    ).get("hyper_parameters", {})
    first = next((key for key in FIRST_LAYER_KEYS if key in state_dict), None)
    if first is None:
        raise ValueError(
            f"{checkpoint}: the backbone has none of {FIRST_LAYER_KEYS}; only timm ResNets "
            "and Vision Transformers are exported"
        )
    in_chans = int(state_dict[first].shape[1])
    if len(bands) != in_chans:
        raise ValueError(
            f"bands {list(bands)} has {len(bands)} entries but the backbone in "
            f"{checkpoint} takes {in_chans} input channel(s)"
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=output_dir, suffix=".pth", delete=False) as handle:
        torch.save(state_dict, handle)
    temporary = Path(handle.name)
    digest = sha256_of(temporary)
    path = output_dir / f"{name}-{digest[:8]}.pth"
    shutil.move(temporary, path)
    method = ssl_method(hyper_parameters)
    meta: dict[str, Any] = {
        "dataset": dataset,
        "in_chans": in_chans,
        "model": hyper_parameters.get("model", "unknown"),
        "publication": PUBLICATIONS.get(method, PUBLICATION),
        "repo": repo,
        "ssl_method": method,
        "bands": list(bands),
        "sha256": digest,
    }
    if first == "patch_embed.proj.weight" and "size" in hyper_parameters:
        meta["img_size"] = int(hyper_parameters["size"])
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return ExportedWeights(path, digest, meta)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``torchgeo-dic3l-export CHECKPOINT --name N --dataset D --repo R``.

    Args:
        argv: Arguments instead of ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(
        prog="torchgeo-dic3l-export",
        description="Extract the backbone of a DI3CLTask or SARMAETask checkpoint into a "
        "hash-named weights file that timm (and smp) encoders load strictly.",
    )
    parser.add_argument("checkpoint", type=Path, help="Lightning checkpoint (.ckpt)")
    parser.add_argument("--name", required=True, help="base name, e.g. resnet50_sar_di3cl")
    parser.add_argument("--dataset", required=True, help="pre-training data, for the metadata")
    parser.add_argument("--repo", required=True, help="code repository, for the metadata")
    parser.add_argument(
        "--url-prefix", help="public folder the file will be hosted in; prints its enum entry"
    )
    parser.add_argument("--bands", nargs="+", default=["VV", "VH"], help="input bands in order")
    parser.add_argument("--output", type=Path, default=Path("weights"), help="output folder")
    args = parser.parse_args(argv)
    exported = export_weights(
        args.checkpoint, args.output, args.name, args.dataset, args.repo, args.bands
    )
    print(f"wrote {exported.path} (sha256 {exported.sha256})")
    print(f"metadata: {exported.path.with_suffix('.json')}")
    if args.url_prefix:
        print("weight enum entry:")
        print(exported.enum_entry(args.url_prefix))


if __name__ == "__main__":
    main()
