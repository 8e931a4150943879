"""`python -m engine.assets list|pull [NAME ...]`: the registered assets, and fetching them."""

from __future__ import annotations

import argparse
import logging
import sys

from engine.assets import REGISTRY, AssetError, asset_path, assets_dir, load_plugin_assets


def _cmd_list(_: argparse.Namespace) -> int:
    load_plugin_assets()
    print(f"cache: {assets_dir()}")
    for a in REGISTRY.values():
        dest = assets_dir() / a.filename
        state = "cached" if dest.exists() and dest.stat().st_size == a.size else "missing"
        print(f"{a.name:22s} {state:8s} {a.size/1e6:7.2f} MB  {a.licence}")
        print(f"{'':22s} {a.description}")
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    load_plugin_assets()
    # Without names: every registered asset (the tests exercise the whole zoo, the judges and LPIPS).
    names = args.names or list(REGISTRY)
    failed = 0
    for n in names:
        try:
            p = asset_path(n)
            print(f"ok     {n:22s} {p}")
        except AssetError as exc:
            failed += 1
            print(f"FAILED {exc}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.assets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the registered assets and whether they are cached").set_defaults(fn=_cmd_list)
    p = sub.add_parser("pull", help="fetch and verify assets (default: every registered asset)")
    p.add_argument("names", nargs="*", help="asset names")
    p.add_argument("--all", action="store_true", help="pull every registered asset (the default)")
    p.set_defaults(fn=_cmd_pull)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
