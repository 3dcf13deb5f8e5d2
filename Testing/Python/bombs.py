"""Hostile files for the limit tests: tiny on disk, huge when believed (built in milliseconds)."""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path


def nrrd_header_bomb(path: Path, size: int = 2000) -> Path:
    """A ~1 KB NRRD whose header claims size³ int16 voxels (16 GB at 2000)."""
    header = (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {size} {size} {size}\nencoding: gzip\nendian: little\n"
              "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
              "space origin: (0,0,0)\n\n")
    path.write_bytes(header.encode() + gzip.compress(bytes(1024)))
    return path


def _zero_member(n_bytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(bytes(n_bytes)) + compressor.flush()


def nifti_gzip_bomb(path: Path, shape=(2048, 2048, 1024), members: int = 256) -> Path:
    """A few-MB .nii.gz: a valid uint8 NIfTI-1 header claiming `shape`, then `members` concatenated gzip
    members of 16 MiB of zeros each (gzip readers treat them as one stream: 4 GiB at 256)."""
    hdr = bytearray(352)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, *shape, 1, 1, 1, 1)
    struct.pack_into("<h", hdr, 70, 2)       # datatype uint8
    struct.pack_into("<h", hdr, 72, 8)       # bitpix
    struct.pack_into("<8f", hdr, 76, 1, 1, 1, 1, 0, 0, 0, 0)
    struct.pack_into("<f", hdr, 108, 352)    # vox_offset
    hdr[344:348] = b"n+1\0"
    block = _zero_member(16 << 20)
    path.write_bytes(gzip.compress(bytes(hdr)) + block * members)
    return path
