#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Creates what must exist before the first write.
#   bootstrap.sh alias         the first index $NAME-000001 behind the write alias $NAME
#   bootstrap.sh data_stream   the data stream $NAME (needs the data_stream template)
#   bootstrap.sh index         nothing: date-named indices are created by the first write
# Safe to run again. See common.sh for the settings.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
mode="$(mode_arg "${1:-index}")"
case "$mode" in
  index) log "index mode: nothing to create" ;;
  alias)
    if es GET "/_alias/$NAME" >/dev/null 2>&1; then
      log "alias $NAME exists already"
    else
      es PUT "/$NAME-000001" bootstrap-alias.json
      log "created $NAME-000001 as the write index of alias $NAME"
    fi
    ;;
  data_stream)
    if es GET "/_data_stream/$NAME" >/dev/null 2>&1; then
      log "data stream $NAME exists already"
    else
      es PUT "/_data_stream/$NAME"
      log "created data stream $NAME"
    fi
    ;;
esac
