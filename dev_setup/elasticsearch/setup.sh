#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Everything the exporter does at startup, by hand, in order:
#   setup.sh [index|alias|data_stream]
# lifecycle policy (ILM or ISM), index template, then the write alias or data
# stream. A server without ILM/ISM gets a warning and a template without
# lifecycle settings. See common.sh for the settings (ES_URL, auth, NAME).
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
mode="$(mode_arg "${1:-index}")"
if bash "$here/lifecycle.sh" "$mode"; then
  bash "$here/template.sh" "$mode"
else
  log "warning: no lifecycle policy (the server has no ILM/ISM API?); installing the template without it"
  NO_LIFECYCLE=1 bash "$here/template.sh" "$mode"
fi
bash "$here/bootstrap.sh" "$mode"
