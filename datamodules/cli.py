"""Entry point `seggpt-lab-data` (convert, inspect): datasets in their native layouts -> shards.

The data package's own CLI, so that `seggpt_lab.cli` (`seggpt-lab`) imports nothing from `datamodules`.
"""

from __future__ import annotations

import argparse
import os
import sys

from datamodules import remote
from datamodules.contact_sheet import inspect
from datamodules.convert import BadSampleError, convert
from datamodules.remote import NetworkError
from datamodules.schema import SampleError
from datamodules.sources import SOURCES, get_source


def main(args: list[str] | None = None) -> int:
    """`seggpt-lab-data convert|inspect`: datasets in their native layouts -> shards, and a look at the result.

    Plain argparse, not LightningCLI: it configures no training run. Returns the exit status."""

    parser = argparse.ArgumentParser(prog="seggpt-lab-data", description=main.__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="write DIR/SOURCE/SPLIT-%%06d.tar shards and SPLIT-index.json")
    conv.add_argument("source", choices=list(SOURCES), metavar="SOURCE", help=", ".join(SOURCES))
    conv.add_argument("--root", help="the dataset as unpacked from its official download (not for synthetic)")
    conv.add_argument("--split", required=True, help="split to convert; each source lists its own")
    conv.add_argument("--out", required=True, help="shard root: a folder, or object storage (s3://bucket/prefix; "
                      "credentials and endpoint from AWS_* variables, see README)")
    conv.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    conv.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    conv.add_argument("--skip-bad", action="store_true", help="skip unreadable samples and list them in the index")
    conv.add_argument("--limit", type=int, help="convert only the first N items")
    insp = commands.add_parser("inspect", help="print per-class counts and write a contact sheet PNG")
    insp.add_argument("folder", help="DIR/SOURCE, as written by convert")
    insp.add_argument("--num", type=int, default=16, help="samples on the sheet (default 16)")
    insp.add_argument("--seed", type=int, default=0)
    insp.add_argument("--out", help="sheet path (default DIR/SOURCE/SPLIT-sheet.png)")
    opts = parser.parse_args(args)

    try:
        if opts.command == "convert":
            source = get_source(opts.source)(opts.root, opts.split)
            index = convert(source, opts.out, opts.shard_size, opts.workers, opts.skip_bad, opts.limit)
            print(f"{index['num_samples']} samples in {len(index['shards'])} shards, {len(index['skipped'])} skipped "
                  f"-> {remote.join(opts.out, opts.source)}")
        else:
            inspect(opts.folder, opts.num, opts.seed, opts.out)
    except (SampleError, BadSampleError, FileNotFoundError, ValueError, NetworkError) as e:
        print(f"seggpt-lab-data: error: {e}", file=sys.stderr)
        return 2
    return 0


def entry() -> None:
    """Console-script wrapper: exit with main's status."""
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
