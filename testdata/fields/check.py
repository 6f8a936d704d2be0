#!/usr/bin/env python3
"""Check testdata/fields/v1.json against docs/FIELDS.md, independently of the Go code.

Written from the specification alone: value matching (section 4.2), envelope values
(5.2), transit associated data (5.1), deterministic context (5.3), header (7), manifest
(6) and MAC (8). FPE outputs and Vault ciphertexts are taken from the vectors (FF1 has
its own vectors in testdata/fpe). Needs the `cryptography` package:

    python3 testdata/fields/check.py
"""

import base64
import json
import os
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def lp(b):
    return struct.pack(">I", len(b)) + b


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def nonce(seq):
    return b"\0\0\0\0" + struct.pack(">Q", seq)


WS = b" \t\r\n"


class Doc:
    """Section 4.2: walk a JSON document along rule paths and report the selected
    values as (concrete path, rule index, start, end), in document order."""

    def __init__(self, text, rules):
        self.b = text
        self.out = []
        self.trie = {}
        for i, path in enumerate(rules):
            node = self.trie
            for seg in path.split("."):
                name = seg.rstrip("[]")
                steps = [("k", name)] + [("a", None)] * ((len(seg) - len(name)) // 2)
                for st in steps:
                    node = node.setdefault(st, {})
            node["rule"] = i

    def ws(self, i):
        while i < len(self.b) and self.b[i] in WS:
            i += 1
        return i

    def string_end(self, i):
        i += 1
        while self.b[i] != ord('"'):
            i += 2 if self.b[i] == ord("\\") else 1
        return i + 1

    def skip(self, i):
        c = self.b[i]
        if c == ord('"'):
            return self.string_end(i)
        if c in b"{[":
            depth = 0
            while True:
                c = self.b[i]
                if c == ord('"'):
                    i = self.string_end(i)
                    continue
                if c in b"{[":
                    depth += 1
                elif c in b"}]":
                    depth -= 1
                    if depth == 0:
                        return i + 1
                i += 1
        while i < len(self.b) and self.b[i] not in b",}] \t\r\n":
            i += 1
        return i

    def walk(self, i, node, path):
        if "rule" in node:
            end = self.skip(i)
            self.out.append((path, node["rule"], i, end))
            return end
        c = self.b[i]
        if c == ord("{") and any(k[0] == "k" for k in node if k != "rule"):
            i = self.ws(i + 1)
            if self.b[i] == ord("}"):
                return i + 1
            while True:
                kend = self.string_end(i)
                key = json.loads(self.b[i:kend])  # unescaped
                i = self.ws(self.ws(kend) + 1)  # past ':'
                child = node.get(("k", key))
                if child is not None:
                    i = self.walk(i, child, (path + "." if path else "") + key)
                else:
                    i = self.skip(i)
                i = self.ws(i)
                if self.b[i] == ord("}"):
                    return i + 1
                i = self.ws(i + 1)
        if c == ord("[") and ("a", None) in node:
            i = self.ws(i + 1)
            if self.b[i] == ord("]"):
                return i + 1
            k = 0
            while True:
                i = self.ws(self.walk(i, node[("a", None)], "%s[%d]" % (path, k)))
                k += 1
                if self.b[i] == ord("]"):
                    return i + 1
                i = self.ws(i + 1)
        return self.skip(i)

    def locate(self):
        self.walk(self.ws(0), self.trie, "")
        return self.out


def parse_manifest(m):
    fields = m.split(";")
    assert fields[0] == "v1"
    out = {}
    for f in fields[1:]:
        k, v = f.split("=", 1)
        out[k] = v
    assert list(out)[-1] == "t" and list(out)[-2] == "r"
    rules = [e.split(":") for e in out["r"].split(",")] if out["r"] else []
    return out, rules


def check_positive(v):
    key = bytes.fromhex(v["data_key"])
    gcm = AESGCM(key)
    seq0 = int(v["seq"])
    body = v["body"].encode()
    man, rules = parse_manifest(v["manifest"])
    mid = bytes.fromhex(v["message_id"])
    assert man["id"] == b64(mid), "manifest id"
    assert v["header"] == "v1;alg=A256GCM;kid=%s;n=%s" % (v["key_id"], b64(nonce(seq0))), "header"

    # Section 4.2 on the input and the output: same concrete paths, in the same order.
    spans = Doc(body, [p for p, _ in rules]).locate()
    out_spans = Doc(v["body_out"].encode(), [p for p, _ in rules]).locate()
    assert [s[:2] for s in spans] == [s[:2] for s in out_spans], "selected values"
    assert [(f["path"]) for f in v["fields"]] == [s[0] for s in spans], "field list"

    transit = {c["key"]: list(c["items"]) for c in v["transit"]}
    rebuilt, prev, env = b"", 0, 0
    for f, (path, ri, start, end), (_, _, ostart, oend) in zip(v["fields"], spans, out_spans):
        raw = body[start:end]
        repl = v["body_out"].encode()[ostart:oend]
        assert raw.hex() == f["plaintext"] and repl.decode() == f["replacement"], path
        code = rules[ri][1]
        field_ad = b"pubcrypt-field/v1\0" + lp(mid) + lp(path.encode())
        if code == "e":
            env += 1
            ct = gcm.encrypt(nonce(seq0 + env), raw, field_ad)
            assert repl == b'"pc1e.' + b64(ct).encode() + b'"', "envelope " + path
        elif code == "t":
            item = transit[man["tk"]].pop(0)
            assert item["plaintext"] == raw.hex() and item["associated_data"] == field_ad.hex(), "transit " + path
            assert repl == b'"' + item["ciphertext"].encode() + b'"'
        elif code == "d":
            item = transit[man["dk"]].pop(0)
            ctx = ("pubcrypt-det/v1:" + rules[ri][0]).encode()
            assert item["plaintext"] == raw.hex() and item.get("context") == ctx.hex(), "deterministic " + path
            assert "associated_data" not in item
            assert repl == b'"' + item["ciphertext"].encode() + b'"'
        else:
            assert code[0] == "f" and f["tweak"] == rules[ri][0]
            s = json.loads(raw)
            out = json.loads(repl)
            assert len(s) == len(out) and all((a.isdigit()) == (b.isdigit()) for a, b in zip(s, out)), "fpe shape"
        rebuilt += body[prev:start] + repl
        prev = end
    rebuilt += body[prev:]
    assert rebuilt == v["body_out"].encode(), "only selected values change"
    assert all(not items for items in transit.values()), "unused transit items"

    md = v["metadata_out"]
    clear = sorted(k for k in md if k not in ("pubcrypt", "pubcrypt-dek", "pubcrypt-fields"))
    unsigned = v["manifest"][: v["manifest"].rindex(";t=")]
    ad = b"pubcrypt-fields/v1\0" + lp(v["header"].encode()) + lp(v["wrapped"].encode()) + lp(unsigned.encode())
    ad += struct.pack(">I", len(clear))
    for k in clear:
        ad += lp(k.encode()) + lp(md[k].encode())
    ad += lp(v["body_out"].encode())
    assert ad.hex() == v["mac_ad"], "mac_ad"
    tag = gcm.encrypt(nonce(seq0), b"", ad)
    assert tag.hex() == v["tag"] and man["t"] == b64(tag), "tag"
    assert md["pubcrypt"] == v["header"] and md["pubcrypt-dek"] == v["wrapped"] and md["pubcrypt-fields"] == v["manifest"]
    assert {k: md[k] for k in clear} == v["metadata"]


def check_negative(v):
    """Every auth vector must fail the MAC or an envelope value; this checks the MAC
    half where the entries parse."""
    md = v["metadata"]
    try:
        man, _ = parse_manifest(md["pubcrypt-fields"])
        n = md["pubcrypt"].split(";n=")[1]
        seq0 = struct.unpack(">Q", base64.urlsafe_b64decode(n + "==")[4:12])[0]
        md["pubcrypt-dek"]
    except Exception:
        return "unparsed"
    clear = sorted(k for k in md if not k.startswith("pubcrypt"))
    unsigned = md["pubcrypt-fields"][: md["pubcrypt-fields"].rindex(";t=")]
    ad = b"pubcrypt-fields/v1\0" + lp(md["pubcrypt"].encode()) + lp(md["pubcrypt-dek"].encode()) + lp(unsigned.encode())
    ad += struct.pack(">I", len(clear))
    for k in clear:
        ad += lp(k.encode()) + lp(md[k].encode())
    ad += lp(v["body"].encode())
    tag = AESGCM(bytes.fromhex(v["data_key"])).encrypt(nonce(seq0), b"", ad)
    return "mac-ok" if b64(tag) == man["t"] else "mac-fails"


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "v1.json")
    with open(path) as f:
        vectors = json.load(f)
    for v in vectors["positive"]:
        check_positive(v)
        print("ok  ", v["name"])
    for v in vectors["negative"]:
        r = check_negative(v)
        if v["error"] == "auth" and r == "mac-ok":
            assert "MAC recomputed" in v["name"], v["name"]
        print("ok  ", v["name"], "(%s)" % r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
