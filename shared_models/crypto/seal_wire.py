"""Glue between numpy coefficient arrays and TenSEAL/SEAL objects.

TenSEAL's Python API cannot write raw ciphertext coefficients, but it loads
serialised CKKS vectors.  We therefore *build* that serialisation ourselves
(SEAL format, compression mode "none"), using only public, versioned formats:

* SEAL header (16 bytes): magic 0xA15E, header size 16, SEAL version
  major/minor (taken from the linked SEAL), compr_mode, reserved, total size.
* SEAL ``Ciphertext`` members: parms_id (4 x u64), is_ntt_form (u8), size,
  poly_modulus_degree, coeff_modulus_size (u64 each), scale (f64),
  correction_factor (u64), then a headed ``DynArray<u64>`` (count + data).
* TenSEAL ``CKKSVectorProto`` (protobuf): ``repeated uint32 sizes = 1;
  repeated bytes ciphertexts = 2; double scale = 3``.

SEAL validates every loaded ciphertext against the context (parms_id known,
coefficients reduced), so a malformed build fails loudly, never silently.
Reading plaintext coefficients back: SEAL's own serialisation of the ``Plaintext`` (parms_id 4 x u64,
coeff_count u64, scale f64, then a headed ``DynArray<u64>``), written to a per-thread scratch file (in
``/dev/shm`` where it exists) and decompressed (SEAL compresses with zstd or zlib) -- about 5x faster than
one ``DynArray.at`` call per coefficient, which stays as the fallback (no ``zstandard``, unexpected layout).
"""

from __future__ import annotations

import atexit
import os
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import tenseal.sealapi as sealapi

_SEAL_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")
_CT_MEMBERS = struct.Struct("<4QBQQQdQ")


def _seal_header(total_size: int) -> bytes:
    ref = sealapi.Serialization.SEALHeader()
    return _HEADER.pack(_SEAL_MAGIC, _HEADER.size, ref.version_major, ref.version_minor,
                        0, 0, total_size)


def seal_ciphertext_bytes(polys: np.ndarray, *, parms_id: Sequence[int], scale: float,
                          ntt_form: bool = True) -> bytes:
    """Serialise a single-prime ciphertext ``polys`` of shape (size, N), NTT form unless ``ntt_form`` is False."""
    arr = np.ascontiguousarray(polys, dtype="<u8")
    size, degree = arr.shape
    data = arr.tobytes()
    dyn = _seal_header(_HEADER.size + 8 + len(data)) + struct.pack("<Q", arr.size) + data
    members = _CT_MEMBERS.pack(*parms_id, int(ntt_form), size, degree, 1, float(scale), 1) + dyn
    return _seal_header(_HEADER.size + len(members)) + members


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def ckks_vector_proto(ciphertexts: Sequence[bytes], sizes: Sequence[int], scale: float) -> bytes:
    """TenSEAL ``CKKSVectorProto`` bytes for ``ts.ckks_vector_from``."""
    packed_sizes = b"".join(_varint(s) for s in sizes)
    out = [b"\x0a", _varint(len(packed_sizes)), packed_sizes]
    for blob in ciphertexts:
        out += [b"\x12", _varint(len(blob)), blob]
    out += [b"\x19", struct.pack("<d", float(scale))]
    return b"".join(out)


def chunk_sizes(n_slots: int, slots_per_ct: int) -> list[int]:
    """Slot counts per ciphertext, as TenSEAL chunks a vector of ``n_slots``."""
    full, rest = divmod(n_slots, slots_per_ct)
    return [slots_per_ct] * full + ([rest] if rest else [])


def vector_proto_from_polys(polys: np.ndarray, *, n_slots: int, parms_id: Sequence[int],
                            scale: float, ntt_form: bool = True) -> bytes:
    """``polys`` of shape (n_ct, size, N) -> TenSEAL CKKSVector bytes."""
    sizes = chunk_sizes(n_slots, polys.shape[-1] // 2)
    if len(sizes) != polys.shape[0]:
        raise ValueError("number of ciphertexts does not match the slot count")
    blobs = [seal_ciphertext_bytes(p, parms_id=parms_id, scale=scale, ntt_form=ntt_form) for p in polys]
    return ckks_vector_proto(blobs, sizes, scale)


_PLAIN_MEMBERS = struct.Struct("<4QQd")
_COMPR_NONE, _COMPR_ZLIB, _COMPR_ZSTD = 0, 1, 2
_scratch = threading.local()


def _scratch_path() -> str:
    """A scratch file per (process, thread): a forked child never shares its parent's file."""
    path = getattr(_scratch, "path", None)
    if path is None or getattr(_scratch, "pid", None) != os.getpid():
        tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, path = tempfile.mkstemp(prefix="fedinterest-plain-", dir=tmp_dir)
        os.close(fd)
        _scratch.path, _scratch.pid = path, os.getpid()
        atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _decompress(mode: int, data: bytes) -> bytes | None:
    if mode == _COMPR_NONE:
        return data
    if mode == _COMPR_ZLIB:
        return zlib.decompress(data)
    if mode == _COMPR_ZSTD:
        try:
            import zstandard
        except ImportError:
            return None
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 26)
    return None


def _coeffs_via_save(plain: "sealapi.Plaintext", count: int) -> np.ndarray | None:
    """Coefficients from SEAL's serialisation of ``plain``; None (use the slow path) when anything is off."""
    try:
        path = _scratch_path()
        plain.save(path)
        with open(path, "rb") as fh:
            raw = fh.read()
        return _parse_plaintext(raw, count)
    except (OSError, RuntimeError, ValueError, struct.error):
        return None


def _parse_plaintext(raw: bytes, count: int) -> np.ndarray | None:
    """SEAL header | [compressed] parms_id 4xu64, coeff_count u64, scale f64, headed DynArray(u64 size, data)."""
    if len(raw) < _HEADER.size:
        return None
    magic, hsize, _major, _minor, mode, _res, total = _HEADER.unpack_from(raw)
    if magic != _SEAL_MAGIC or hsize != _HEADER.size or total != len(raw):
        return None
    body = _decompress(mode, raw[hsize:])
    if body is None or len(body) < _PLAIN_MEMBERS.size:
        return None
    n_coeffs = _PLAIN_MEMBERS.unpack_from(body)[4]
    inner = _PLAIN_MEMBERS.size  # the DynArray's own SEAL header, uncompressed inside the body
    if len(body) < inner + _HEADER.size + 8:
        return None
    magic, hsize, _major, _minor, _mode, _res, size = _HEADER.unpack_from(body, inner)
    (n_data,) = struct.unpack_from("<Q", body, inner + _HEADER.size)
    start = inner + _HEADER.size + 8
    if (magic != _SEAL_MAGIC or hsize != _HEADER.size or n_data != n_coeffs or n_coeffs < count
            or size != _HEADER.size + 8 + 8 * n_coeffs or len(body) != start + 8 * n_coeffs):
        return None
    return np.frombuffer(body, dtype="<u8", count=count, offset=start).astype(np.uint64)


def plaintext_coeffs(plain: "sealapi.Plaintext", count: int) -> np.ndarray:
    """Copy the first ``count`` coefficients of a SEAL plaintext into numpy."""
    fast = _coeffs_via_save(plain, count)
    if fast is not None:
        return fast
    return plaintext_coeffs_slow(plain, count)


def plaintext_coeffs_slow(plain: "sealapi.Plaintext", count: int) -> np.ndarray:
    """Reference path: one ``DynArray.at`` call per coefficient."""
    arr = plain.dyn_array()
    if arr.size() < count:
        raise ValueError("plaintext shorter than expected")
    return np.fromiter(map(arr.at, range(count)), dtype=np.uint64, count=count)


def iter_proto_fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """Minimal protobuf reader: yields (field_number, wire_type, value)."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf")
        yield field, wire, value


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def context_public_key(context_bytes: bytes) -> bytes:
    """Serialized CKKS public key inside TenSEAL ``TenSEALContextProto`` bytes
    (field 2 ``public_context`` -> field 1 ``public_key``); b"" if absent."""
    for field, wire, value in iter_proto_fields(context_bytes):
        if field == 2 and wire == 2:
            for sub, sub_wire, sub_value in iter_proto_fields(value):
                if sub == 1 and sub_wire == 2:
                    return bytes(sub_value)
    return b""
