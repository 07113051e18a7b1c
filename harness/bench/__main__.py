"""`python -m harness.bench [outside|profile SECONDS|scale] [options]`; the older
`--profile SECONDS` and `--scale` flags name the same subcommands."""

from __future__ import annotations

import sys

USAGE = (
    "usage: scripts/bench [outside] [options]   the outside benchmark (the default)\n"
    "       scripts/bench profile SECONDS [--databases sqlite,postgres]\n"
    "       scripts/bench scale [--sizes ...] [--lines N] [--databases ...]"
)


def main(argv: list[str]) -> int:
    if "--profile" in argv:  # the older spelling
        at = argv.index("--profile")
        argv = ["profile", *argv[at + 1 : at + 2], *argv[:at], *argv[at + 2 :]]
    elif "--scale" in argv:
        argv = ["scale", *(a for a in argv if a != "--scale")]
    command = argv[0] if argv and not argv[0].startswith("-") else "outside"
    rest = argv[1:] if argv and argv[0] == command else argv
    if command == "outside":
        from harness.bench.outside import main as outside

        return outside(rest)
    if command == "profile":
        return _profile(rest)
    if command == "scale":
        from harness.bench.scale import main as scale

        return scale(rest)
    if command in ("help", "-h", "--help"):
        print(USAGE)
        return 0
    print(f"unknown benchmark {command!r}\n{USAGE}", file=sys.stderr)
    return 2


def _profile(argv: list[str]) -> int:
    import argparse

    from harness.bench.profile import main as profile

    parser = argparse.ArgumentParser(prog="scripts/bench profile")
    parser.add_argument("seconds", type=float, help="per request kind")
    parser.add_argument("--databases", default="sqlite,postgres")
    args = parser.parse_args(argv)
    return profile(args.seconds, args.databases.split(","))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
