"""The AsyncAPI document of our events, in a canonical order, and the command that writes it.

FastStream derives the document from the subscriber and publisher declarations
(contract.py). It keeps publishers in a weak set, so its channel order follows object
addresses and changes from run to run; every mapping here is sorted by key, which makes the
document byte-for-byte reproducible wherever it is generated.

    python -m app.messaging.asyncapi [--out asyncapi.yaml]

It is generated for the default names (exchange `foodies`, queues `payment.*`), whatever the
environment says.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def canonical(document: Any) -> Any:
    """The same document with every mapping sorted by key (lists keep their order)."""
    return json.loads(json.dumps(document, sort_keys=True))


def document_of(schema_factory: Any) -> dict[str, Any]:
    """The canonical document of an app's specification (`app.schema`)."""
    return canonical(schema_factory.to_specification().to_jsonable())


def default_document() -> dict[str, Any]:
    from app.bootstrap import create_app
    from app.config import Settings

    return document_of(create_app(Settings.model_construct()).schema)


def to_yaml(document: dict[str, Any]) -> str:
    import yaml  # a development dependency: only this command writes YAML

    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.messaging.asyncapi", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write here instead of standard output")
    args = parser.parse_args(argv)
    text = to_yaml(default_document())
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
