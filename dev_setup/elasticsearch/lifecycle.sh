#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs the lifecycle policy `$NAME`: ILM on Elasticsearch, ISM on OpenSearch.
#   lifecycle.sh [index|alias|data_stream]     (default index)
# index: delete each date-named index 30 days after its creation.
# alias, data_stream: roll over at 1 day or 50GiB per primary shard, delete 30 days later.
# Edit the JSON files here for other numbers. See common.sh for the settings.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
mode="$(mode_arg "${1:-index}")"
if [ "$(flavor)" = opensearch ]; then
  case "$mode" in
    index) file=ism-policy-index.json ;;
    alias) file=ism-policy-alias.json ;;
    data_stream) file=ism-policy-data-stream.json ;;
  esac
  # Updating an existing ISM policy needs its sequence number and primary term.
  query=""
  if current="$(es GET "/_plugins/_ism/policies/$NAME" 2>/dev/null)"; then
    seq="$(printf '%s' "$current" | sed -n 's/.*"_seq_no" *: *\([0-9]*\).*/\1/p')"
    term="$(printf '%s' "$current" | sed -n 's/.*"_primary_term" *: *\([0-9]*\).*/\1/p')"
    [ -n "$seq" ] && [ -n "$term" ] && query="?if_seq_no=$seq&if_primary_term=$term"
  fi
  es PUT "/_plugins/_ism/policies/$NAME$query" "$file"
  log "ISM policy $NAME installed (attaches itself to new indices through ism_template)"
else
  file=ilm-policy-rollover.json
  [ "$mode" = index ] && file=ilm-policy-index.json
  es PUT "/_ilm/policy/$NAME" "$file"
  log "ILM policy $NAME installed (the index template attaches it)"
fi
