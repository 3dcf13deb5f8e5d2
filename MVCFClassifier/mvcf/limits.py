"""Size limits: what a file or a model card may ask of memory, checked before anything large is read or built.

A 1 KB header can claim 2000³ voxels, a few MB of gzip can expand to gigabytes, a card can ask for a network
of billions of weights or an ensemble of 200,000 members. Each limit below has a default that fits a whole-body
CT on a laptop and an override for users who need more: the environment variable `MVCF_<NAME>` (or, for the
voxel count, `mvcf --max-voxels N`). docs/reliability.md lists them.
"""
from __future__ import annotations

import hashlib
import math
import os
import zlib
from pathlib import Path
from typing import Sequence, Union

from mvcf.errors import MVCFError

PathLike = Union[str, os.PathLike]

#: name -> (default, what it bounds). The environment variable is MVCF_<NAME>.
DEFAULTS: dict[str, tuple[int, str]] = {
    "MAX_VOXELS": (1 << 30, "voxels of one CT or mask (2 GiB as int16)"),
    "MAX_IMAGE_BYTES": (4 << 30, "bytes of one decoded CT or mask"),
    "MAX_DICOM_FILES": (20000, "files of one DICOM series"),
    "MAX_VIEW_ELEMENTS": (1 << 26, "numbers in one model input (256 MiB as float32; a 3D view up to 256³ with "
                                   "4 windows)"),
    "MAX_ENSEMBLE": (64, "members of a model ensemble"),
    "MAX_PARAMETERS": (200_000_000, "weights of a model (all ensemble members, 800 MB as float32)"),
    "MAX_WEIGHTS_BYTES": (2 << 30, "bytes of a weights file"),
    "MAX_CARD_BYTES": (4 << 20, "bytes of a model card (model.json)"),
    "MAX_TABLE_BYTES": (256 << 20, "bytes of a manifest, a locations file or a statistics CSV"),
    "MAX_LOCATIONS": (1000, "vertebrae of one locations file (a spine has 26; 200,000 took 7 GB and did not end)"),
}


def limit(name: str) -> int:
    """The limit `name` (a key of DEFAULTS): MVCF_<name> from the environment, else the default."""
    default, _ = DEFAULTS[name]
    text = os.environ.get(f"MVCF_{name}", "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise MVCFError(f"environment variable MVCF_{name}={text!r} must be a positive whole number")
    return int(value)


def _over(what: str, amount: int, name: str, unit: str = "") -> MVCFError:
    return MVCFError(f"{what} is {amount:,}{unit}, over the limit of {limit(name):,}{unit} "
                     f"({DEFAULTS[name][1]}); if it is genuine, raise it with MVCF_{name}=N")


def check_count(what: str, amount: int, name: str, unit: str = "") -> None:
    if amount > limit(name):
        raise _over(what, amount, name, unit)


def _pixel_bytes(reader) -> int:
    import SimpleITK as sitk

    per_component = {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2,
                     sitk.sitkUInt32: 4, sitk.sitkInt32: 4, sitk.sitkFloat32: 4, sitk.sitkUInt64: 8,
                     sitk.sitkInt64: 8, sitk.sitkFloat64: 8}
    pixel = reader.GetPixelID()
    if pixel in per_component:
        return per_component[pixel]
    return 16  # complex and vector types: the largest; such files are refused later anyway


def header_size(path: PathLike) -> tuple[tuple[int, ...], int]:
    """(size, bytes per voxel including components) from an image file's header; reads no voxels."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    components = max(1, int(reader.GetNumberOfComponents()))
    return tuple(int(s) for s in reader.GetSize()), components * _pixel_bytes(reader)


def check_image_header(path: PathLike, slices: int = 1) -> None:
    """Refuse an image whose header (times `slices` files, for a DICOM series) claims more voxels or bytes
    than the limits, before its voxels are read. A header ITK cannot read raises RuntimeError (left to the
    reader, whose message names the file)."""
    size, voxel_bytes = header_size(path)
    voxels = math.prod(size) * max(1, int(slices))
    shown = " x ".join(str(s) for s in size) + (f" x {slices} files" if slices > 1 else "")
    if voxels > limit("MAX_VOXELS"):
        raise _over(f"{path}: its header declares {shown} voxels, that", voxels, "MAX_VOXELS")
    check_count(f"{path}: its voxels would take", voxels * voxel_bytes, "MAX_IMAGE_BYTES", " bytes")


def check_file_size(path: PathLike, name: str, what: str) -> int:
    """The size of `path` in bytes, refused when over the limit `name` (st_size: sparse files count in full)."""
    size = Path(path).stat().st_size
    if size > limit(name):
        raise _over(f"{what} {path}", size, name, " bytes")
    return size


def read_bytes_bounded(path: PathLike, name: str, what: str) -> bytes:
    """Read a small file whole, refusing one over the limit `name` without reading it (a 'file' may be a
    pipe or a device: at most limit + 1 bytes are ever read)."""
    check_file_size(path, name, what)
    cap = limit(name)
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise _over(f"{what} {path}", len(data), name, " bytes")
    return data


def gunzip_bounded(path: PathLike, max_bytes: int, chunk: int = 1 << 20) -> int:
    """Decompress a gzip file as a stream, counting bytes, and stop as soon as it exceeds `max_bytes` (a
    gzip bomb never takes more than about `chunk` of memory at a time). Returns the decompressed size;
    MVCFError when over the bound, truncated or corrupt."""
    total, in_member = 0, False
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as handle:
        pending = b""
        while True:
            if not pending:
                pending = handle.read(chunk)
                if not pending:
                    break
            in_member = True
            try:
                out = inflater.decompress(pending, chunk)
            except zlib.error:
                raise MVCFError(f"{path} is a corrupt gzip file") from None
            total += len(out)
            if total > max_bytes:
                raise MVCFError(f"{path} expands to more than {max_bytes:,} bytes when decompressed (a gzip "
                                "bomb, or not the file it claims to be)")
            pending = inflater.unconsumed_tail
            if inflater.eof:  # concatenated members are one stream to gzip readers
                pending, in_member = inflater.unused_data + pending, False
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    if in_member:
        raise MVCFError(f"{path} is a truncated gzip file")
    return total


def sha256_stream(path: PathLike, name: str = "MAX_WEIGHTS_BYTES", what: str = "weights file") -> str:
    """sha256 of a file read in 1 MiB chunks (never whole), after its size was checked against `name`."""
    check_file_size(path, name, what)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_view_shape(shape: Sequence[int], what: str = "the model input") -> None:
    """A view (one case's model input) may hold at most MAX_VIEW_ELEMENTS numbers (e.g. 3d at --size 1024 is
    10^9: refused before anything is sampled)."""
    check_count(f"{what} {tuple(int(s) for s in shape)} holds {math.prod(shape):,} numbers; that",
                math.prod(int(s) for s in shape), "MAX_VIEW_ELEMENTS")


def estimate_resnet_parameters(layers: Sequence[int], planes: Sequence[int], in_channels: int,
                               spatial_dims: int, kernel: int = 7) -> int:
    """Weights of a MONAI basic-block ResNet from its config, without building it (within a few percent)."""
    k3 = 3 ** spatial_dims
    total = in_channels * planes[0] * kernel ** spatial_dims
    previous = planes[0]
    for blocks, width in zip(layers, planes):
        if blocks > 0:
            total += (previous * width + (2 * blocks - 1) * width * width) * k3
            total += previous * width if previous != width else 0
            previous = width
    return int(total + previous + 1)


def estimate_densenet_parameters(init_features: int, growth_rate: int, block_config: Sequence[int],
                                 bn_size: int, in_channels: int, spatial_dims: int) -> int:
    """Weights of a MONAI DenseNet from its config, without building it (within a few percent)."""
    k3 = 3 ** spatial_dims
    total = in_channels * init_features * 7 ** spatial_dims
    channels = init_features
    for i, layers in enumerate(block_config):
        for _ in range(layers):
            total += channels * bn_size * growth_rate + bn_size * growth_rate * growth_rate * k3
            channels += growth_rate
        if i + 1 < len(block_config):
            total += channels * (channels // 2)
            channels //= 2
    return int(total + channels + 1)


def estimate_parameters(network: dict) -> int:
    """Weights of one network of a card's `network` config (ResNet or DenseNet family; 0 when unknown)."""
    if "block_inplanes" in network:
        return estimate_resnet_parameters(network["layers"], network["block_inplanes"], network["in_channels"],
                                          network["spatial_dims"], network.get("conv1_t_size", 7))
    if "block_config" in network:
        return estimate_densenet_parameters(network["init_features"], network["growth_rate"],
                                            network["block_config"], network["bn_size"], network["in_channels"],
                                            network["spatial_dims"])
    return 0


def check_network_request(network: dict, ensemble_size: int) -> None:
    """What a card may ask for: at most MAX_ENSEMBLE members and MAX_PARAMETERS weights in all."""
    check_count("the ensemble size", int(ensemble_size), "MAX_ENSEMBLE")
    per_member = estimate_parameters(network)
    check_count(f"the network ({ensemble_size} x {per_member:,} weights)", per_member * int(ensemble_size),
                "MAX_PARAMETERS", " weights")
