{{/* Object name of everything this chart makes. */}}
{{- define "event-collector.fullname" -}}
{{- default .Chart.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: the same as the kustomize base's. */}}
{{- define "event-collector.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
{{- end -}}

{{- define "event-collector.labels" -}}
{{ include "event-collector.selectorLabels" . }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
TOML rendering of the `config` values. Helm reads every YAML number as a
float, and `toToml` would write 48 as 48.0, which the collector rejects for
integer keys; this writes whole numbers as integers. Nested tables are
written inline, arrays of tables as [[name]].
*/}}
{{- define "event-collector.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "event-collector.tomlValue" -}}
{{- if kindIs "map" . -}}
{ {{- $first := true -}}{{- range $k, $v := . -}}{{- if not $first -}}, {{ end -}}{{- $first = false -}}{{ include "event-collector.tomlKey" $k }} = {{ include "event-collector.tomlValue" $v }}{{- end -}} }
{{- else if kindIs "slice" . -}}
[{{- range $i, $v := . -}}{{- if $i -}}, {{ end -}}{{ include "event-collector.tomlValue" $v }}{{- end -}}]
{{- else if kindIs "bool" . -}}
{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if eq (floor .) (float64 .) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) -}}
{{ . }}
{{- else if kindIs "invalid" . -}}
{{- fail "config: a null value cannot be written to TOML; remove the key instead" -}}
{{- else -}}
{{ toString . | toJson }}
{{- end -}}
{{- end -}}

{{- define "event-collector.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) -}}{{- if kindIs "map" (first .) -}}true{{- end -}}{{- end -}}
{{- end -}}

{{- define "event-collector.configToml" -}}
{{- $config := deepCopy .Values.config -}}
{{- if .Values.ha.enabled -}}
{{- $_ := set $config "ha" (merge (default dict $config.ha) (dict "enabled" true)) -}}
{{- $_ := set $config "state" (merge (default dict $config.state) (dict "checkpoint" .Values.ha.checkpoint)) -}}
{{- end -}}
{{- range $k, $v := $config -}}
{{- if and (not (kindIs "map" $v)) (not (include "event-collector.isTableArray" $v)) (not (and (kindIs "slice" $v) (eq (len $v) 0))) }}
{{ include "event-collector.tomlKey" $k }} = {{ include "event-collector.tomlValue" $v }}
{{- end -}}
{{- end -}}
{{- range $k, $v := $config -}}
{{- if kindIs "map" $v }}

[{{ include "event-collector.tomlKey" $k }}]
{{- range $k2, $v2 := $v }}
{{ include "event-collector.tomlKey" $k2 }} = {{ include "event-collector.tomlValue" $v2 }}
{{- end -}}
{{- else if include "event-collector.isTableArray" $v -}}
{{- range $item := $v }}

[[{{ include "event-collector.tomlKey" $k }}]]
{{- range $k2, $v2 := $item }}
{{ include "event-collector.tomlKey" $k2 }} = {{ include "event-collector.tomlValue" $v2 }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}
{{ end -}}

{{- define "event-collector.configContent" -}}
{{- if .Values.configToml -}}
{{ .Values.configToml }}
{{- else -}}
# Rendered by the event-collector Helm chart from .Values.config.
{{ include "event-collector.configToml" . }}
{{- end -}}
{{- end -}}
