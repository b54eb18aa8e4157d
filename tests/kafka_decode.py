"""Decode a brook segment with kafka-python's record reader (an independent
implementation of Kafka's RecordBatch v2 format) and print what it sees as
JSON lines: one "batch" line per batch, one "record" line per record, and a
final "end" line with the bytes consumed.

Usage: python3 tests/kafka_decode.py <segment.log>
"""
import json
import sys

try:
    from kafka.record.memory_records import MemoryRecords
except ImportError:
    sys.exit("kafka-python is missing: pip install kafka-python==3.0.12")


def hexify(b):
    return None if b is None else bytes(b).hex()


def main(path):
    data = open(path, "rb").read()
    records = MemoryRecords(data)
    consumed = 0
    for batch in records:
        print(json.dumps({
            "kind": "batch",
            "base_offset": batch.base_offset,
            "last_offset": batch.last_offset,
            "size": batch.size_in_bytes,
            "magic": batch.magic,
            "crc_valid": batch.validate_crc(),
            "compression": batch.compression_type,
            "timestamp_type": batch.timestamp_type,
            "transactional": batch.is_transactional,
            "control": batch.is_control_batch,
            "producer_id": batch.producer_id,
            "producer_epoch": batch.producer_epoch,
            "base_sequence": batch.base_sequence,
            "leader_epoch": batch.leader_epoch,
            "max_timestamp": batch.max_timestamp,
        }))
        consumed += batch.size_in_bytes
        for r in batch:
            print(json.dumps({
                "kind": "record",
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": hexify(r.key),
                "value": hexify(r.value),
                "headers": [[k, hexify(v)] for k, v in r.headers],
            }))
    print(json.dumps({"kind": "end", "consumed": consumed, "file_size": len(data)}))


if __name__ == "__main__":
    main(sys.argv[1])
