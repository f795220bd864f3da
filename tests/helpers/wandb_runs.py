"""Reads an offline wandb run's transaction log (``offline-run-*/run-*.wandb``) without a wandb server.

wandb >= 0.19 keeps no Python reader for its own files; the format is LevelDB's log (32 KiB blocks of records,
each with a 7-byte header: crc32, length, type) holding ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32768
HEADER = 7  # both the file header (":W&B", magic, version) and each record header
FULL, LAST = 1, 4


def _records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    pos, chunk = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def offline_runs(save_dir: Path) -> list[Path]:
    return sorted(Path(save_dir).glob("**/offline-run-*/run-*.wandb"))


def read_run(path: Path, wait_s: float = 20.0) -> dict:
    """``{"group", "job_type", "tags", "project", "config", "summary", "history_keys"}`` of one offline run.

    wandb's service may still be writing when ``wandb.finish`` returns: waits for the run's exit record.
    """
    deadline = time.monotonic() + wait_s
    records = list(_records(path))
    while not any(r.WhichOneof("record_type") == "exit" for r in records) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = list(_records(path))
    out = {"config": {}, "summary": {}, "history_keys": set()}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(group=run.run_group, job_type=run.job_type, tags=list(run.tags), project=run.project)
            out["config"].update({i.key: json.loads(i.value_json) for i in run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update if i.key})
        elif kind == "summary":
            out["summary"].update({i.key: json.loads(i.value_json) for i in record.summary.update if i.key})
        elif kind == "history":
            out["history_keys"].update(i.key or i.nested_key[0] for i in record.history.item)
    return out
