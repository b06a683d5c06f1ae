{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "cimconv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart> unless the release name already contains the chart name. */}}
{{- define "cimconv.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cimconv.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "cimconv.labels" -}}
helm.sh/chart: {{ include "cimconv.chart" . }}
app.kubernetes.io/name: {{ include "cimconv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cimconv
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component (worker | webhook); pass (dict "ctx" $ "component" "worker"). */}}
{{- define "cimconv.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cimconv.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "cimconv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cimconv.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference; pass (dict "image" <image values> "default" .Values.image "ctx" $). Digest wins over tag. */}}
{{- define "cimconv.image" -}}
{{- $repo := .image.repository | default .default.repository }}
{{- $digest := .image.digest | default .default.digest }}
{{- $tag := .image.tag | default .default.tag | default .ctx.Chart.AppVersion }}
{{- if $digest }}
{{- printf "%s@%s" $repo $digest }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/*
NATS URL: nats.url, or else the Service nats.service in the release namespace.
HostProcess pods resolve names with the node's DNS, which does not search the
cluster's domains, so with worker.hostProcess.enabled the name is fully
qualified. Used by the shared ConfigMap, so the webhook gets the same URL.
*/}}
{{- define "cimconv.natsURL" -}}
{{- $n := .Values.nats -}}
{{- if $n.url -}}
{{- tpl $n.url . -}}
{{- else if .Values.worker.hostProcess.enabled -}}
{{- printf "nats://%s.%s.svc.%s:4222" (tpl $n.service .) .Release.Namespace $n.clusterDomain -}}
{{- else -}}
{{- printf "nats://%s:4222" (tpl $n.service .) -}}
{{- end -}}
{{- end }}

{{/*
Arguments of `converter serve`. Only flags the converter documents are passed
as flags; pass (dict "ctx" $ "role" "worker" "dir" <secrets base dir> "sep" <path separator> "dataDir" <path or "">).
*/}}
{{- define "cimconv.args" -}}
{{- $v := .ctx.Values -}}
- serve
- {{ printf "--role=%s" .role | quote }}
- {{ printf "--config=%s%sconfig%sconfig.yaml" .dir .sep .sep | quote }}
{{- with .dataDir }}
- {{ printf "--data-dir=%s" . | quote }}
{{- end }}
{{- if $v.nats.credentials.secretName }}
- {{ printf "--nats-creds=%s%snats-creds%s%s" .dir .sep .sep $v.nats.credentials.key | quote }}
{{- end }}
{{- end }}

{{/*
Environment shared by worker and webhook containers (CIMCONV_<KEY> convention).
Settings without a documented flag are passed here rather than in the config
file, so a converter that does not know them ignores them instead of refusing
the file. Same arguments as cimconv.args.
*/}}
{{- define "cimconv.commonEnv" -}}
{{- $v := .ctx.Values -}}
- name: CIMCONV_LOG_LEVEL
  value: {{ $v.log.level | quote }}
- name: CIMCONV_LOG_FORMAT
  value: {{ $v.log.format | quote }}
{{- with $v.nats.tls }}
{{- if .secretName }}
{{- if .caKey }}
- name: CIMCONV_NATS_TLS_CA
  value: {{ printf "%s%snats-tls%s%s" $.dir $.sep $.sep .caKey | quote }}
{{- end }}
{{- if and .certKey .keyKey }}
- name: CIMCONV_NATS_TLS_CERT
  value: {{ printf "%s%snats-tls%s%s" $.dir $.sep $.sep .certKey | quote }}
- name: CIMCONV_NATS_TLS_KEY
  value: {{ printf "%s%snats-tls%s%s" $.dir $.sep $.sep .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Volume mounts for config and NATS secrets; same arguments as cimconv.commonEnv. */}}
{{- define "cimconv.commonMounts" -}}
{{- $v := .ctx.Values -}}
- name: config
  mountPath: {{ printf "%s%sconfig" .dir .sep | quote }}
  readOnly: true
{{- if $v.nats.credentials.secretName }}
- name: nats-creds
  mountPath: {{ printf "%s%snats-creds" .dir .sep | quote }}
  readOnly: true
{{- end }}
{{- if $v.nats.tls.secretName }}
- name: nats-tls
  mountPath: {{ printf "%s%snats-tls" .dir .sep | quote }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "cimconv.commonVolumes" -}}
{{- $v := .Values -}}
- name: config
  configMap:
    name: {{ include "cimconv.fullname" . }}
{{- with $v.nats.credentials.secretName }}
- name: nats-creds
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $v.nats.credentials.key }}
        path: {{ $v.nats.credentials.key }}
{{- end }}
{{- with $v.nats.tls.secretName }}
- name: nats-tls
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}
