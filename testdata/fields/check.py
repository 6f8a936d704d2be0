#!/usr/bin/env python3
"""Check testdata/fields/v1.json against docs/FIELDS.md, independently of the Go code.

Written from the specification alone: value matching (sections 4.2-4.5: wildcards,
precedence, keep rules and the default, unmatched bodies), envelope values
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


NAME = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def parse_path(p):
    """Section 4.1: ("k", name), ("any", None) for "*", ("a", None) for "[]", ("deep", None) for "**"."""
    steps = []
    for seg in p.split("."):
        if seg == "**":
            steps.append(("deep", None))
            continue
        name = seg.rstrip("[]")
        steps.append(("any", None) if name == "*" else ("k", name))
        steps += [("a", None)] * ((len(seg) - len(name)) // 2)
    return steps


def path_matches(p, cs):
    """Section 4.2: does rule path p match the concrete steps cs ("**" tries every length)?"""
    if not p:
        return not cs
    if p[0][0] == "deep":
        return any(path_matches(p[1:], cs[k:]) for k in range(len(cs) + 1))
    if not cs:
        return False
    kind, name = p[0]
    ckind, cname = cs[0]
    ok = (kind == "a") == (ckind == "a") and (kind != "k" or name == cname)
    return ok and path_matches(p[1:], cs[1:])


def key_text(key):
    """Section 4.2: a key in a concrete path, "{" base64url "}" unless it is a name."""
    kb = key.encode()
    if kb and all(c in NAME for c in kb):
        return key
    return "{" + b64(kb) + "}"


class Doc:
    """Sections 4.2-4.5: walk a JSON document and report the selected values as
    (concrete path, rule index, start, end), in document order. rules are (path, code)
    pairs; code "k" keeps; default is the index of the default rule or None."""

    def __init__(self, text, rules, default=None):
        self.b = text
        self.out = []
        self.rules = [(parse_path(p), code) for p, code in rules]
        self.default = default

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

    def walk(self, i, cs, path, kept):
        # Section 4.4: the most specific protecting rule (fewest "**", then fewest "*");
        # keep rules only switch the default off.
        cands = []
        for ri, (steps, code) in enumerate(self.rules):
            if ri != self.default and path_matches(steps, cs):
                if code == "k":
                    kept = True
                else:
                    rank = (sum(s[0] == "deep" for s in steps), sum(s[0] == "any" for s in steps))
                    cands.append((rank, ri))
        if cands:
            end = self.skip(i)
            self.out.append((path, min(cands)[1], i, end))
            return end
        c = self.b[i]
        if c == ord("{"):
            i = self.ws(i + 1)
            if self.b[i] == ord("}"):
                return i + 1
            while True:
                kend = self.string_end(i)
                key = json.loads(self.b[i:kend])  # unescaped
                i = self.ws(self.ws(kend) + 1)  # past ':'
                kt = key_text(key)
                i = self.ws(self.walk(i, cs + [("k", key)], (path + "." if path else "") + kt, kept))
                if self.b[i] == ord("}"):
                    return i + 1
                i = self.ws(i + 1)
        if c == ord("["):
            i = self.ws(i + 1)
            if self.b[i] == ord("]"):
                return i + 1
            k = 0
            while True:
                i = self.ws(self.walk(i, cs + [("a", None)], "%s[%d]" % (path, k), kept))
                k += 1
                if self.b[i] == ord("]"):
                    return i + 1
                i = self.ws(i + 1)
        end = self.skip(i)
        if self.default is not None and not kept:
            self.out.append((path, self.default, i, end))
        return end

    def locate(self):
        i = self.ws(0)
        if self.b[i] != ord("{"):  # section 4.5: a policy addresses objects only
            return []
        self.walk(i, [], "", False)
        return self.out


def unmatched_action(policy, body):
    """Section 4.5, from the policy text: fields, body, refuse, clear or not_json."""
    try:
        json.loads(body)
    except ValueError:
        return "not_json"
    if body.strip(" \t\r\n").startswith("{"):
        return "fields"
    for clause in policy.split(";"):
        k, _, v = clause.partition("=")
        if k.strip() == "unmatched":
            return v.strip()
    return "body"


def parse_manifest(m):
    fields = m.split(";")
    assert fields[0] in ("v1", "v2")
    out = {}
    for f in fields[1:]:
        k, v = f.split("=", 1)
        out[k] = v
    order = list(out)
    assert order[-1] == "t" and (order[-2] == "r" or order[-2] == "d" and order[-3] == "r")
    rules = [e.split(":", 1) for e in out["r"].split(",")] if out["r"] else []
    default = None
    if "d" in out:
        assert out["d"] in ("t", "e")
        default = len(rules)
        rules.append(["(default)", out["d"]])
    v2 = default is not None or any(c == "k" or "*" in p for p, c in rules)
    assert fields[0] == ("v2" if v2 else "v1"), "manifest version"
    return out, rules, default


def check_positive(v):
    key = bytes.fromhex(v["data_key"])
    gcm = AESGCM(key)
    seq0 = int(v["seq"])
    body = v["body"].encode()
    man, rules, default = parse_manifest(v["manifest"])
    mid = bytes.fromhex(v["message_id"])
    assert man["id"] == b64(mid), "manifest id"
    assert v["header"] == "v1;alg=A256GCM;kid=%s;n=%s" % (v["key_id"], b64(nonce(seq0))), "header"

    # Section 4.2 on the input and the output: same concrete paths, in the same order.
    spans = Doc(body, rules, default).locate()
    out_spans = Doc(v["body_out"].encode(), rules, default).locate()
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
        man, _, _ = parse_manifest(md["pubcrypt-fields"])
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
    for v in vectors["unmatched"]:
        assert unmatched_action(v["policy"], v["body"]) == v["action"], v
    print("ok   %d unmatched routings" % len(vectors["unmatched"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
