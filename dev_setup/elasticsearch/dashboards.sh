#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Imports the saved objects (data view `k8s-events-*` on @timestamp, four
# visualizations, a saved search and a dashboard "Kubernetes events
# (event-collector)") into Kibana or OpenSearch Dashboards:
#   dashboards.sh kibana URL                  e.g. http://localhost:5601
#   dashboards.sh opensearch-dashboards URL
# Auth as in common.sh (ES_USER/ES_PASSWORD_FILE, ES_API_KEY_FILE, ...).
# For another index pattern, edit "k8s-events-*" in the ndjson first.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
case "${1:-}" in
  kibana) file="$here/dashboards/kibana.ndjson"; xsrf="kbn-xsrf: true" ;;
  opensearch-dashboards) file="$here/dashboards/opensearch-dashboards.ndjson"; xsrf="osd-xsrf: true" ;;
  *) log "usage: $0 kibana|opensearch-dashboards URL"; exit 2 ;;
esac
url="${2:?usage: $0 kibana|opensearch-dashboards URL}"
curl "${curl_args[@]}" -f -X POST "${url%/}/api/saved_objects/_import?overwrite=true" -H "$xsrf" --form "file=@$file"
echo
log "imported $(wc -l <"$file") saved objects from $file"
