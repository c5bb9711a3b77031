#!/usr/bin/env python3
"""python-tuf's ngclient behind the tuf-conformance client CLI: the reference client of the tests
and of the TUF bench.

  ngclient.py --metadata-dir DIR init TRUSTED_ROOT
  ngclient.py --metadata-dir DIR --metadata-url URL refresh
  ngclient.py --metadata-dir DIR --metadata-url URL --target-name PATH [--target-name PATH ...]
              --target-base-url URL --target-dir DIR download

Exit 0 on full success, 1 otherwise (the error on stderr). Targets are stored in the target
directory under their URL-quoted path (ngclient's default), and one already there with matching
hashes is not fetched again.
"""

import argparse
import os
import shutil
import sys

from tuf.ngclient import Updater


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--metadata-dir", required=True)
    parser.add_argument("--metadata-url")
    parser.add_argument("--target-name", action="append", default=[])
    parser.add_argument("--target-base-url")
    parser.add_argument("--target-dir")
    parser.add_argument("command", choices=["init", "refresh", "download"])
    parser.add_argument("root", nargs="?")
    args = parser.parse_args()
    try:
        if args.command == "init":
            os.makedirs(args.metadata_dir, exist_ok=True)
            shutil.copyfile(args.root, os.path.join(args.metadata_dir, "root.json"))
            return 0
        updater = Updater(
            metadata_dir=args.metadata_dir,
            metadata_base_url=args.metadata_url,
            target_base_url=args.target_base_url,
            target_dir=args.target_dir,
            bootstrap=None,  # the trusted root is DIR/root.json (from init or a refresh)
        )
        updater.refresh()
        for name in args.target_name:
            info = updater.get_targetinfo(name)
            if info is None:
                print(f"target {name} not found", file=sys.stderr)
                return 1
            if updater.find_cached_target(info) is None:
                updater.download_target(info)
        return 0
    except Exception as e:  # the CLI's contract: any failure is exit 1 with the reason
        # With its causes: a DeserializationError says only "Failed to deserialize JSON", the
        # reason (e.g. "Multiple signatures found for keyid ...") is the error it was raised from.
        reasons = [f"{type(e).__name__}: {e}"]
        cause = e.__cause__
        while cause is not None and len(reasons) < 8:
            reasons.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__
        print("error: " + ": caused by ".join(reasons), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
