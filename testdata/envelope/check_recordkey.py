#!/usr/bin/env python3
"""Check testdata/envelope/recordkey.json against docs/FORMAT.md sections 3.2 and 8,
independently of the Go code: KeyCtx, the flag, the associated data over the clear
entries (flag and protected key included), AES-256-GCM under the data key, and the
negative cases that must fail authentication. The record keys themselves are Vault's
(internal/codec TestRecordKeyVectors checks them against a real Vault with the recorded
key restored). Needs the `cryptography` package:

    python3 testdata/envelope/check_recordkey.py
"""

import json
import os
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def lp(b):
    return struct.pack(">I", len(b)) + b


def ad(md):
    out = b"pubcrypt/v1\0" + lp(md["pubcrypt"].encode()) + lp(md["pubcrypt-dek"].encode())
    clear = sorted((k.encode(), v.encode()) for k, v in md.items() if k not in ("pubcrypt", "pubcrypt-dek"))
    out += struct.pack(">I", len(clear))
    for k, v in clear:
        out += lp(k) + lp(v)
    return out


def opens(key, seq, body, md):
    nonce = b"\0\0\0\0" + struct.pack(">Q", seq)
    try:
        return AESGCM(key).decrypt(nonce, body, ad(md))
    except InvalidTag:
        return None


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recordkey.json")
    v = json.load(open(path, encoding="utf-8"))
    key, kid = bytes.fromhex(v["data_key"]), v["vault_key"]["name"]
    by_key = {}
    for p in v["positive"]:
        e = p["entry"]
        assert bytes.fromhex(p["key_context"]) == b"pubcrypt-key/v1:" + e.encode(), p["name"]
        assert p["flag"] == "v1;dk=" + kid + ";e=" + e, p["name"]
        md = p["metadata_out"]
        assert md[e] == p["record_key"] and md["pubcrypt-key"] == p["flag"], p["name"]
        assert p["record_key"].startswith("vault:v") and p["record_key"] != p["key"], p["name"]
        assert ad(md).hex() == p["associated_data"], p["name"]
        pt = opens(key, int(v["seq"]), bytes.fromhex(p["body_out"]), md)
        assert pt == p["body"].encode(), p["name"]
        opened = {k: x for k, x in md.items() if k not in ("pubcrypt", "pubcrypt-dek", "pubcrypt-key")}
        opened[e] = p["key"]
        assert opened == p["metadata_opened"], p["name"]
        # Deterministic: one (entry, key) has one record key.
        assert by_key.setdefault((e, p["key"]), p["record_key"]) == p["record_key"], p["name"]
    assert len({r for r in by_key.values()}) == len(by_key), "two keys share a record key"
    for n in v["negative"]:
        if n["error"] == "auth":
            body, md = bytes.fromhex(n["body"]), n["metadata"]
            ok = "pubcrypt" in md and opens(key, int(v["seq"]), body, md) is not None
            assert not ok, n["name"]
    print("ok: %d positive, %d negative" % (len(v["positive"]), len(v["negative"])))


if __name__ == "__main__":
    sys.exit(main())
