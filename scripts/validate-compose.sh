#!/usr/bin/env bash
# Validate docker-compose.yml against the compose-spec JSON schema (no Docker engine is
# needed). The schema is the one shipped inside the docker-compose 1.29.2 wheel on PyPI;
# jsonschema and PyYAML come from PyPI too, into the services cache venv.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${FRAUDSTREAM_CACHE:-$PWD/.cache/services}
venv=$CACHE/venv
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import jsonschema, yaml' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check jsonschema pyyaml >&2
fi
schema=$CACHE/compose_spec.json
if [[ ! -s $schema ]]; then
  tmp=$(mktemp -d)
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$tmp" docker-compose==1.29.2 >&2
  "$venv/bin/python" - "$tmp"/docker_compose-1.29.2-*.whl "$schema" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    open(sys.argv[2], "wb").write(z.read("compose/config/compose_spec.json"))
PY
  rm -rf "$tmp"
fi
"$venv/bin/python" - "$schema" docker-compose.yml <<'PY'
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
doc = yaml.safe_load(open(sys.argv[2]))
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
for e in errors:
    print(f"{sys.argv[2]}: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}", file=sys.stderr)
if errors:
    sys.exit(1)
# Every published port must be bound to loopback.
for name, svc in doc["services"].items():
    for p in svc.get("ports", []):
        if not str(p).startswith("127.0.0.1:"):
            print(f"{sys.argv[2]}: services/{name}: port {p} is not bound to 127.0.0.1", file=sys.stderr)
            sys.exit(1)
# Every endpoint in config/docker.toml must be a port the compose file publishes.
import re, tomllib
cfg = tomllib.load(open("config/docker.toml", "rb"))
published = {int(str(p).split(":")[1]) for s in doc["services"].values() for p in s.get("ports", [])}
endpoints = [cfg["s3"]["endpoint"], cfg["verdicts"]["dynamodb"]["endpoint"], cfg["lake"]["location"],
             "kafka://" + cfg["kafka"]["brokers"]]
for ep in endpoints:
    m = re.match(r"^\w+://127\.0\.0\.1:(\d+)", ep)
    if not m or int(m.group(1)) not in published:
        print(f"config/docker.toml: endpoint {ep} is not a port docker-compose.yml publishes", file=sys.stderr)
        sys.exit(1)
print(f"{sys.argv[2]}: valid against the compose-spec schema; {len(doc['services'])} services; "
      f"config/docker.toml endpoints match its ports")
PY
