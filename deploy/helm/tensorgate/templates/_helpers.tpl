{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "tensorgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name of every object. */}}
{{- define "tensorgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tensorgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tensorgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tensorgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tensorgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: inference-gateway
{{- end }}

{{- define "tensorgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tensorgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tensorgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret with the S3 credentials, or "" when the pod's own identity is used. */}}
{{- define "tensorgate.s3SecretName" -}}
{{- $s3 := .Values.modelStore.s3 }}
{{- if $s3.existingSecret }}
{{- $s3.existingSecret }}
{{- else if or $s3.accessKeyId $s3.secretAccessKey }}
{{- printf "%s-s3" (include "tensorgate.fullname" .) }}
{{- end }}
{{- end }}

{{/* The model store URI the server reads. */}}
{{- define "tensorgate.storeUri" -}}
{{- if eq .Values.modelStore.type "s3" }}
{{- .Values.modelStore.s3.uri }}
{{- else }}
{{- .Values.modelStore.mountPath }}
{{- end }}
{{- end }}

{{/*
PromQL for the scaling signal, per pod of this release, as KEDA queries it (prometheus-adapter builds its own from
deploy/prometheus/adapter-rules.yaml). The series carry namespace and service labels from the ServiceMonitor.
*/}}
{{- define "tensorgate.scalingQuery" -}}
{{- $sel := printf "namespace=%q, service=%q" .Release.Namespace (include "tensorgate.fullname" .) }}
{{- if eq .Values.autoscaling.metric "inflight" }}
{{- printf "sum(tensorgate_inflight_requests{%s})" $sel }}
{{- else }}
{{- printf "max(histogram_quantile(0.99, sum by (model, version, runtime, le) (rate(tensorgate_request_duration_seconds_bucket{%s}[2m]))) / on (model, version, runtime) max by (model, version, runtime) (tensorgate_sla_target_seconds{%s, objective=\"p99\"}))" $sel $sel }}
{{- end }}
{{- end }}

{{/* Container environment beyond the ConfigMap: S3 location and credentials, then server.extraEnv. */}}
{{- define "tensorgate.env" -}}
{{- if eq .Values.modelStore.type "s3" }}
{{- $s3Secret := include "tensorgate.s3SecretName" . }}
{{- with .Values.modelStore.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.modelStore.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- if $s3Secret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $s3Secret }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3Secret }}
      key: AWS_SECRET_ACCESS_KEY
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $s3Secret }}
      key: AWS_SESSION_TOKEN
      optional: true
{{- end }}
{{- end }}
{{- if .Values.tracing.enabled }}
- name: OTEL_SERVICE_NAME
  value: {{ .Values.tracing.serviceName | default (include "tensorgate.fullname" .) | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .Values.tracing.sampler | quote }}
{{- with .Values.tracing.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | toString | quote }}
{{- end }}
{{- with .Values.tracing.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with .Values.server.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
