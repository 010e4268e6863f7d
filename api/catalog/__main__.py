"""`python -m api.catalog --markdown | --typescript | --asyncapi`: print the event catalog as
docs/events.md, web/types/events.d.ts, or the AsyncAPI document."""

from __future__ import annotations

import argparse
import json
import sys

from api.catalog import asyncapi, markdown, typescript


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api.catalog", description=__doc__)
    form = parser.add_mutually_exclusive_group(required=True)
    form.add_argument("--markdown", action="store_true", help="docs/events.md")
    form.add_argument("--typescript", action="store_true", help="web/types/events.d.ts")
    form.add_argument("--asyncapi", action="store_true", help="the AsyncAPI 3.0 document")
    args = parser.parse_args(argv)
    if args.markdown:
        text = markdown.render()
    elif args.typescript:
        text = typescript.render()
    else:
        text = json.dumps(asyncapi.document(), indent=2) + "\n"
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
