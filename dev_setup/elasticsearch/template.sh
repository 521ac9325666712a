#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs the index template `$NAME` (composable, `_index_template`).
#   template.sh [index|alias|data_stream]     (default index)
# Patterns: index and alias `$NAME-*`, data_stream `$NAME`. Labels and
# annotations are `flattened` (Elasticsearch) or `flat_object` (OpenSearch
# 2.7+), so `app` and `app.kubernetes.io/name` never collide. On Elasticsearch
# the template names the ILM policy: run lifecycle.sh first, or set
# NO_LIFECYCLE=1 to leave it out. See common.sh for the settings.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
mode="$(mode_arg "${1:-index}")"
fl="$(flavor)"
file="template-${mode//_/-}-$fl.json"
if [ "${NO_LIFECYCLE:-0}" = 1 ]; then
  tmp="$(mktemp "$here/.nolifecycle.XXXXXX.json")"
  trap 'rm -f "$tmp"' EXIT
  python3 - "$here/$file" >"$tmp" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
s = t["template"]["settings"]
for k in [k for k in s if "lifecycle" in k or "index_state_management" in k]:
    del s[k]
print(json.dumps(t, indent=2))
PY
  file="$(basename "$tmp")"
fi
es PUT "/_index_template/$NAME" "$file"
log "index template $NAME installed for $fl ($mode mode)"
