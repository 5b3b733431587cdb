"""TensorBoard event files made without TensorFlow: the bytes of one file, handed to the writer.

An event file is a sequence of TFRecords (length: uint64 little-endian, its masked CRC-32C, the
serialized `Event` protobuf, the payload's masked CRC-32C). `event_file_bytes` builds one for a
trained model: the file-version event, the HParams summary, one event per epoch holding every
scalar of that epoch (TensorBoard reads any number of values per event), then the final metrics.

Why not tf.summary: importing TensorFlow costs seconds, and its eager `tf.summary.scalar`
costs ~0.1 ms per scalar; here the whole file costs a few milliseconds per thousand epochs.
The CRCs are computed for all records of one length at once (numpy, one table lookup per byte
position), so that no Python loop runs over the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

#: CRC-32C (Castagnoli), reflected polynomial: what TFRecord framing checks.
CASTAGNOLI = 0x82F63B78
MASK_DELTA = 0xA282EAD8  # TFRecord's masking constant (tensorflow/core/lib/hash/crc32c.h)


def crc_table() -> np.ndarray:
    """uint32 [256]: the CRC-32C of each byte value (table-driven CRC)."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(CASTAGNOLI), table >> 1)
    return table.astype(np.uint32)


TABLE = crc_table()


def masked_crc32c_rows(rows: np.ndarray) -> np.ndarray:
    """uint32 [n]: the masked CRC-32C of each row of `rows` (uint8 [n, length]), as TFRecord
    stores it: crc rotated right by 15 bits plus MASK_DELTA (mod 2**32)."""
    crc = np.full(rows.shape[0], 0xFFFFFFFF, dtype=np.uint32)
    for column in range(rows.shape[1]):
        crc = TABLE[(crc ^ rows[:, column]) & 0xFF] ^ (crc >> 8)
    crc ^= np.uint32(0xFFFFFFFF)
    return ((crc >> 15) | (crc << 17)) + np.uint32(MASK_DELTA)


def masked_crc32c_many(payloads: Sequence[bytes]) -> list[int]:
    """The masked CRC-32C of each payload; payloads of one length are checked together."""
    crcs = [0] * len(payloads)
    by_length: dict[int, list[int]] = {}
    for i, payload in enumerate(payloads):
        by_length.setdefault(len(payload), []).append(i)
    for length, members in by_length.items():
        rows = np.frombuffer(b"".join(payloads[i] for i in members), dtype=np.uint8)
        values = masked_crc32c_rows(rows.reshape(len(members), length)).tolist()
        for i, value in zip(members, values, strict=True):
            crcs[i] = value
    return crcs


def tf_records(payloads: Sequence[bytes]) -> bytes:
    """The TFRecord framing of `payloads`, one record each, as one byte string."""
    lengths = np.array([len(p) for p in payloads], dtype="<u8")
    length_bytes = lengths.view(np.uint8).reshape(-1, 8)
    length_crcs = masked_crc32c_rows(length_bytes).tolist() if len(payloads) else []
    payload_crcs = masked_crc32c_many(payloads)
    parts: list[bytes] = []
    for payload, size, size_crc, payload_crc in zip(
        payloads, lengths.tolist(), length_crcs, payload_crcs, strict=True
    ):
        parts += [struct.pack("<QI", size, size_crc), payload, struct.pack("<I", payload_crc)]
    return b"".join(parts)


def event_file_bytes(
    *,
    tags: Sequence[str],
    curves: np.ndarray,
    final: dict[str, float],
    hparams: dict[str, bool | int | float | str],
    trial_id: str,
    wall_time: float,
) -> bytes:
    """One model's event file: HParams, then per epoch (step 1..epochs) the scalar of each tag,
    then `final` at the last epoch (tags `final/<name>`).

    tags: one per column of curves (float64 [epochs, len(tags)]); wall_time: seconds since the
    epoch, stamped on every event (the export's time: training times are not stored).
    Raises ImportError without the tensorboard package (its protobuf classes are used).
    """
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb

    value = Summary.Value
    payloads = [
        Event(wall_time=wall_time, file_version="brain.Event:2").SerializeToString(),
        Event(
            wall_time=wall_time, step=0, summary=hparams_pb(hparams, trial_id, wall_time)
        ).SerializeToString(),
    ]
    rows: list[list[Any]] = curves.tolist()
    for epoch, row in enumerate(rows, start=1):
        summary = Summary(
            value=[value(tag=t, simple_value=v) for t, v in zip(tags, row, strict=True)]
        )
        payloads.append(Event(wall_time=wall_time, step=epoch, summary=summary).SerializeToString())
    if final:
        summary = Summary(value=[value(tag=f"final/{k}", simple_value=v) for k, v in final.items()])
        payloads.append(
            Event(wall_time=wall_time, step=len(rows), summary=summary).SerializeToString()
        )
    return tf_records(payloads)
