#!/usr/bin/env python3
"""RS-TUF-shaped TUF repositories for the tests, built with python-tuf's Metadata API.

Usage: repo.py WORKDIR < OPS.json

WORKDIR holds the keys and the builder's state (`work/`) and the served tree (`www/metadata`,
`www/targets`). OPS is a JSON list of operations, applied in order; the answer on stdout is a JSON
list with one result per operation. The state persists between calls, so a test can build a
repository, let a client trust it, then change it.

The shape is the one of RS-TUF (what CIP's TUF server publishes): consistent snapshots only
(`N.root.json`, `N.snapshot.json`, `N.targets.json`, `N.bins-XX.json`, and `timestamp.json`; no
unversioned copies), succinct hash-bin delegations (TAP 15) from `targets` to `bins-*`, and target
files stored as `<dir>/<sha256>.<basename>`. Metadata files are written indented (not canonical
JSON), so that a client storing re-serialized metadata instead of the bytes it received is seen.

Operations (fields other than `op` are optional unless said):
  init            bins_bits (int or null: no bins), key_type ("ed25519", "rsa", "ecdsa"),
                  expires_days (365)
  add_target      path (required), data (text) or data_hex or data_file (a path), custom (object), role (the role that
                  lists it; default: its bin, or `targets` without bins), hashes (["sha256"]),
                  served_hex (the bytes served instead of data), length (override),
                  hash_overrides ({"sha512": hex}: listed instead of the true hash), serve (true)
  add_fake_targets count, prefix ("fake/"), length (1000): listed, not served (for the bench)
  delegate        delegator (default "targets"), name, paths or path_hash_prefixes,
                  terminating (false), keys (1), threshold (1); again (true: `name` exists,
                  delegated by another role already: a second delegation to it, a "diamond",
                  with its own new keys, which sign `name` only with signs true)
  duplicate       role, mode (null: none; "same": the first signature listed twice; "junk_first":
                  a copy of the first keyid with a wrong signature listed before it)
  set_keys        role, keys (1), threshold (1), signers (how many of the keys sign; all),
                  duplicate (true: the first signature is listed twice), key_type
  alias_key       role: the role's first key is listed once more under another keyid, the role
                  needs both keyids (threshold 2) and is signed under both: one key, two ids
  rotate_root     keys (1), threshold (1), sign_with_old (true), key_type
  expire          role, past (true: expired a day ago; false: a year from now)
  touch           role: publish a new version of it
  publish         snapshot_meta ({"targets.json": version} overrides), timestamp_snapshot_version
                  (override), timestamp_version (override), roles (extra roles to bump)
  bin_for         path -> {"role": the bin that lists path}
  info            -> {"roles": {role: version}, "targets": {path: stored file name}}
"""

import base64
import datetime
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner, Signature, SSlibKey
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)

TOP = ("root", "timestamp", "snapshot", "targets")
SPEC_VERSION = "1.0.31"


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def in_days(days):
    return now() + datetime.timedelta(days=days)


def generate(key_type):
    if key_type == "ed25519":
        return CryptoSigner.generate_ed25519()
    if key_type == "rsa":
        return CryptoSigner.generate_rsa(scheme="rsassa-pss-sha256", size=2048)
    if key_type == "ecdsa":
        return CryptoSigner.generate_ecdsa()
    raise ValueError(f"unknown key type {key_type}")


class Store(dict):
    """The builder's metadata by role, read on first use (a repository has hundreds of bins and
    an operation touches a few); `Repo.save` writes back those read."""

    def __init__(self, md_dir):
        super().__init__()
        self.md_dir = md_dir

    def __missing__(self, role):
        md = Metadata.from_file(os.path.join(self.md_dir, role + ".json"))
        self[role] = md
        return md


class Repo:
    def __init__(self, workdir):
        self.workdir = workdir
        self.work = os.path.join(workdir, "work")
        self.meta_dir = os.path.join(workdir, "www", "metadata")
        self.targets_dir = os.path.join(workdir, "www", "targets")
        self.state = {}
        self.md = Store(os.path.join(self.work, "md"))
        self.signers = {}
        state_file = os.path.join(self.work, "state.json")
        if os.path.exists(state_file):
            with open(state_file) as f:
                self.state = json.load(f)
            for role, keys in self.state["keys"].items():
                self.signers[role] = [self.load_signer(k) for k in keys]

    # Keys -------------------------------------------------------------------------------------

    @staticmethod
    def load_signer(entry):
        priv = serialization.load_pem_private_key(entry["pem"].encode(), password=None)
        public = SSlibKey.from_crypto(priv.public_key(), scheme=entry["scheme"])
        return CryptoSigner(priv, public)

    def new_keys(self, role, count, key_type):
        signers = [generate(key_type) for _ in range(count)]
        self.state["keys"][role] = [
            {
                "pem": s.private_bytes.decode()
                if isinstance(s.private_bytes, bytes)
                else s.private_bytes,
                "scheme": s.public_key.scheme,
            }
            for s in signers
        ]
        self.signers[role] = signers
        return signers

    def key_type(self, op):
        return op.get("key_type", self.state.get("key_type", "ed25519"))

    # State ------------------------------------------------------------------------------------

    def save(self):
        os.makedirs(os.path.join(self.work, "md"), exist_ok=True)
        for role, md in self.md.items():
            with open(os.path.join(self.work, "md", role + ".json"), "w") as f:
                json.dump(md.to_dict(), f)
        with open(os.path.join(self.work, "state.json"), "w") as f:
            json.dump(self.state, f)

    def dirty(self, role):
        if role not in self.state["dirty"]:
            self.state["dirty"].append(role)

    def key_role(self, role):
        """The entry of `keys` that signs `role` (all bins share the `bins` keys, as in RS-TUF)."""
        if role in self.state["keys"]:
            return role
        if self.state.get("bins_bits") is not None and role.startswith("bins-"):
            return "bins"
        raise ValueError(f"no keys for role {role}")

    def delegator(self, role):
        if role in TOP:
            return "root"
        return self.state["delegators"].get(role, "targets")

    # Writing ----------------------------------------------------------------------------------

    def sign(self, role, md, extra_signers=()):
        md.signatures.clear()
        opts = self.state["sign_opts"].get(self.key_role(role), {})
        signers = self.signers[self.key_role(role)]
        signers = signers[: opts.get("signers", len(signers))]
        # The keys of second delegations to `role` that sign it (see `delegate` with `again`).
        for key_role in self.state.get("extra_signers", {}).get(role, []):
            signers = list(signers) + self.signers[key_role]
        for s in list(signers) + list(extra_signers):
            md.sign(s, append=True)
        d = md.to_dict()
        alias = opts.get("alias")
        if alias:
            first = d["signatures"][0]
            d["signatures"].append({"keyid": alias, "sig": first["sig"]})
        # The Metadata API keeps one signature per keyid (a dict): a repeated keyid is
        # written into the dict form.
        duplicate = opts.get("duplicate")
        if duplicate == "junk_first":
            first = d["signatures"][0]
            junk = bytes(len(bytes.fromhex(first["sig"]))).hex()
            d["signatures"].insert(0, {"keyid": first["keyid"], "sig": junk})
        elif duplicate:
            d["signatures"].append(dict(d["signatures"][0]))
        return d

    def write(self, role, md, extra_signers=()):
        d = self.sign(role, md, extra_signers)
        name = "timestamp.json" if role == "timestamp" else f"{md.signed.version}.{role}.json"
        self.state["versions"][role] = md.signed.version
        os.makedirs(self.meta_dir, exist_ok=True)
        data = json.dumps(d, indent=1, sort_keys=True).encode() + b"\n"
        # Atomically (as a real repository publishes): a client polling while the repository
        # publishes must never read a half-written timestamp.json.
        path = os.path.join(self.meta_dir, name)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        return name

    # Operations -------------------------------------------------------------------------------

    def op_init(self, op):
        key_type = op.get("key_type", "ed25519")
        bits = op.get("bins_bits")
        expires = in_days(op.get("expires_days", 365))
        self.state = {
            "key_type": key_type,
            "bins_bits": bits,
            "roles": [],
            "keys": {},
            "sign_opts": {},
            "delegators": {},
            "dirty": [],
            "targets": {},
            "old_root_keys": [],
            "versions": {},
        }
        root = Root(expires=expires, consistent_snapshot=True)
        for role in TOP:
            (signer,) = self.new_keys(role, 1, key_type)
            root.add_key(signer.public_key, role)
        self.md["root"] = Metadata(root)
        targets = Targets(expires=expires)
        if bits is not None:
            (bins,) = self.new_keys("bins", 1, key_type)
            succinct = SuccinctRoles([bins.public_key.keyid], 1, bits, "bins")
            targets.delegations = Delegations(
                keys={bins.public_key.keyid: bins.public_key}, succinct_roles=succinct
            )
            for name in succinct.get_roles():
                self.md[name] = Metadata(Targets(expires=expires))
        self.md["targets"] = Metadata(targets)
        self.md["snapshot"] = Metadata(Snapshot(expires=expires))
        self.md["timestamp"] = Metadata(Timestamp(expires=expires))
        self.state["roles"] = list(self.md)
        # Version 1 of everything, published as one consistent set.
        self.write("root", self.md["root"])
        snapshot = self.md["snapshot"].signed
        for role, md in self.md.items():
            if role in ("root", "snapshot", "timestamp"):
                continue
            self.write(role, md)
            snapshot.meta[f"{role}.json"] = MetaFile(md.signed.version)
        self.write("snapshot", self.md["snapshot"])
        self.md["timestamp"].signed.snapshot_meta = MetaFile(snapshot.version)
        self.write("timestamp", self.md["timestamp"])
        os.makedirs(self.targets_dir, exist_ok=True)
        return {"bins": bits is not None}

    def bin_for(self, path):
        delegations = self.md["targets"].signed.delegations
        if delegations is None or delegations.succinct_roles is None:
            return "targets"
        return delegations.succinct_roles.get_role_for_target(path)

    def op_add_target(self, op):
        path = op["path"]
        if "data_hex" in op:
            data = bytes.fromhex(op["data_hex"])
        elif "data_file" in op:
            with open(op["data_file"], "rb") as f:
                data = f.read()
        else:
            data = op.get("data", path).encode()
        target = TargetFile.from_data(path, data, op.get("hashes", ["sha256"]))
        if "custom" in op:
            target.unrecognized_fields["custom"] = op["custom"]
        if "length" in op:
            target.length = op["length"]
        target.hashes.update(op.get("hash_overrides", {}))
        role = op.get("role") or self.bin_for(path)
        self.md[role].signed.targets[path] = target
        self.dirty(role)
        first_hash = next(iter(target.hashes.values()))
        dirname, sep, basename = path.rpartition("/")
        stored = f"{dirname}{sep}{first_hash}.{basename}"
        if op.get("serve", True):
            served = bytes.fromhex(op["served_hex"]) if "served_hex" in op else data
            full = os.path.join(self.targets_dir, stored)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(served)
        self.state["targets"][path] = stored
        return {"role": role, "stored": stored, "length": target.length, "hashes": target.hashes}

    def op_add_fake_targets(self, op):
        prefix = op.get("prefix", "fake/")
        length = op.get("length", 1000)
        touched = set()
        for i in range(op["count"]):
            path = f"{prefix}target-{i:06}.swu"
            digest = hashlib.sha256(path.encode()).hexdigest()
            target = TargetFile(
                length,
                {"sha256": digest},
                path,
                {"custom": {"version": f"1.{i}", "hardware": ["cip-core-1.0"]}},
            )
            role = self.bin_for(path)
            self.md[role].signed.targets[path] = target
            touched.add(role)
        for role in sorted(touched):
            self.dirty(role)
        return {"roles": len(touched)}

    def op_delegate(self, op):
        delegator = op.get("delegator", "targets")
        name = op["name"]
        again = op.get("again", False)
        if again:
            if name not in self.state["roles"]:
                raise ValueError(f"{name} is not delegated yet")
            key_role = f"{name}@{delegator}"
            signers = self.new_keys(key_role, op.get("keys", 1), self.key_type(op))
            if op.get("signs", False):
                self.state.setdefault("extra_signers", {}).setdefault(name, []).append(key_role)
                self.dirty(name)
        else:
            signers = self.new_keys(name, op.get("keys", 1), self.key_type(op))
        parent = self.md[delegator].signed
        if parent.delegations is None:
            parent.delegations = Delegations(keys={}, roles={})
        if parent.delegations.roles is None:
            raise ValueError(f"{delegator} uses succinct delegations")
        for s in signers:
            parent.delegations.keys[s.public_key.keyid] = s.public_key
        parent.delegations.roles[name] = DelegatedRole(
            name,
            [s.public_key.keyid for s in signers],
            op.get("threshold", 1),
            op.get("terminating", False),
            paths=op.get("paths"),
            path_hash_prefixes=op.get("path_hash_prefixes"),
        )
        if again:
            self.dirty(delegator)
            return {}
        self.md[name] = Metadata(Targets(expires=self.md["targets"].signed.expires))
        self.state["roles"].append(name)
        self.state["delegators"][name] = delegator
        self.dirty(delegator)
        self.dirty(name)
        return {}

    def replace_keys(self, role, signers, threshold):
        """Lists `signers` as the keys of `role` in its delegator, with `threshold`."""
        delegator = self.delegator(role)
        if role == "bins":
            parent = self.md["targets"].signed.delegations
            for keyid in parent.succinct_roles.keyids:
                parent.keys.pop(keyid, None)
            for s in signers:
                parent.keys[s.public_key.keyid] = s.public_key
            parent.succinct_roles.keyids = [s.public_key.keyid for s in signers]
            parent.succinct_roles.threshold = threshold
        elif delegator == "root":
            root = self.md["root"].signed
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            for s in signers:
                root.add_key(s.public_key, role)
            root.roles[role].threshold = threshold
        else:
            parent = self.md[delegator].signed
            for keyid in parent.delegations.roles[role].keyids:
                parent.delegations.keys.pop(keyid, None)
            for s in signers:
                parent.delegations.keys[s.public_key.keyid] = s.public_key
            parent.delegations.roles[role].keyids = [s.public_key.keyid for s in signers]
            parent.delegations.roles[role].threshold = threshold
        self.dirty(delegator)

    def op_set_keys(self, op):
        role = op["role"]
        signers = self.new_keys(role, op.get("keys", 1), self.key_type(op))
        self.replace_keys(role, signers, op.get("threshold", 1))
        opts = {}
        if "signers" in op:
            opts["signers"] = op["signers"]
        if op.get("duplicate"):
            opts["duplicate"] = True
        self.state["sign_opts"][role] = opts
        if role != "bins":  # the bins are many: a test touches those it means
            self.dirty(role)
        return {}

    def op_duplicate(self, op):
        role = op["role"]
        opts = self.state["sign_opts"].setdefault(self.key_role(role), {})
        opts["duplicate"] = op.get("mode")
        self.dirty(role)
        return {}

    def op_alias_key(self, op):
        role = op["role"]
        if self.delegator(role) != "root":
            raise ValueError("alias_key is for top-level roles")
        root = self.md["root"].signed
        key = self.signers[role][0].public_key
        alias = hashlib.sha256(("alias of " + key.keyid).encode()).hexdigest()
        root.keys[alias] = SSlibKey(alias, key.keytype, key.scheme, dict(key.keyval))
        root.roles[role].keyids.append(alias)
        root.roles[role].threshold = 2
        self.state["sign_opts"][role] = {"alias": alias}
        self.dirty("root")
        self.dirty(role)
        return {"alias": alias}

    def op_rotate_root(self, op):
        old = self.state["keys"]["root"]
        signers = self.new_keys("root", op.get("keys", 1), self.key_type(op))
        self.replace_keys("root", signers, op.get("threshold", 1))
        # The new root is signed by the old root keys too (a good chain), unless told not to.
        self.state["old_root_keys"] = old if op.get("sign_with_old", True) else []
        self.dirty("root")
        return {}

    def op_expire(self, op):
        role = op["role"]
        when = in_days(-1) if op.get("past", True) else in_days(365)
        self.md[role].signed.expires = when
        self.dirty(role)
        return {}

    def op_touch(self, op):
        self.dirty(op["role"])
        return {}

    def op_publish(self, op):
        for role in op.get("roles", []):
            self.dirty(role)
        written = []
        dirty = self.state["dirty"]
        if "root" in dirty:
            root = self.md["root"]
            root.signed.version += 1
            old = [self.load_signer(k) for k in self.state.get("old_root_keys", [])]
            written.append(self.write("root", root, old))
            self.state["old_root_keys"] = []
        snapshot = self.md["snapshot"].signed
        for role in dirty:
            if role in ("root", "snapshot", "timestamp"):
                continue
            md = self.md[role]
            md.signed.version += 1
            written.append(self.write(role, md))
            snapshot.meta[f"{role}.json"] = MetaFile(md.signed.version)
        snapshot.version += 1
        for name, version in op.get("snapshot_meta", {}).items():
            snapshot.meta[name] = MetaFile(version)
        written.append(self.write("snapshot", self.md["snapshot"]))
        timestamp = self.md["timestamp"].signed
        timestamp.version = op.get("timestamp_version", timestamp.version + 1)
        timestamp.snapshot_meta = MetaFile(op.get("timestamp_snapshot_version", snapshot.version))
        written.append(self.write("timestamp", self.md["timestamp"]))
        self.state["dirty"] = []
        return {"written": written}

    def op_bin_for(self, op):
        return {"role": self.bin_for(op["path"])}

    def op_info(self, op):
        return {
            "roles": self.state["versions"],
            "targets": self.state.get("targets", {}),
        }


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    repo = Repo(sys.argv[1])
    ops = json.load(sys.stdin)
    results = []
    for op in ops:
        handler = getattr(repo, "op_" + op["op"], None)
        if handler is None:
            sys.exit(f"unknown operation {op['op']}")
        results.append(handler(op))
    repo.save()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
