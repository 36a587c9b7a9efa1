{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "poolwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name: <release>-poolwarden unless the release name already holds it. */}}
{{- define "poolwarden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "poolwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object of the release. */}}
{{- define "poolwarden.labels" -}}
helm.sh/chart: {{ include "poolwarden.chart" . }}
{{ include "poolwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: poolwarden
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select the operator's pods; never change them in an upgrade. */}}
{{- define "poolwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "poolwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "poolwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "poolwarden.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image: registry/repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "poolwarden.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repo = printf "%s/%s" .Values.image.registry $repo -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* The sidecar image the operator injects when a policy names none. */}}
{{- define "poolwarden.sidecarImage" -}}
{{- $tag := default .Chart.AppVersion .Values.sidecar.image.tag -}}
{{- $repo := .Values.sidecar.image.repository -}}
{{- if .Values.sidecar.image.registry -}}
{{- $repo = printf "%s/%s" .Values.sidecar.image.registry $repo -}}
{{- end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{- define "poolwarden.webhookServiceName" -}}
{{- include "poolwarden.fullname" . -}}
{{- end -}}

{{- define "poolwarden.webhookSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "poolwarden.fullname" .)) .Values.webhook.tls.secretName -}}
{{- end -}}

{{/* PodDisruptionBudget API: policy/v1 from Kubernetes 1.21, policy/v1beta1 before. */}}
{{- define "poolwarden.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}
