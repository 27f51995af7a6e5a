"""Checks docker-compose.yml against the Compose Specification's JSON schema (compose-spec.json
beside this file), for machines without the `docker compose` plugin.

    python compose_check.py docker-compose.yml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parent / "compose-spec.json"


def main(path: Path) -> int:
    document = yaml.safe_load(path.read_text())
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    for error in errors:
        where = ".".join(str(p) for p in error.path) or "(root)"
        print(f"{path}: {where}: {error.message}", file=sys.stderr)
    if not errors:
        print(f"{path}: valid Compose file ({', '.join(document['services'])})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
