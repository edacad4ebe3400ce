{{/*
Names. With the release "aviary" every name equals the kustomize manifests' in deploy/
(aviary-agent, aviary-coordinator, ...): crates/cli/tests/helm_chart.rs compares the two.
*/}}
{{- define "aviary.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aviary.agent.name" -}}{{ include "aviary.fullname" . }}-agent{{- end -}}
{{- define "aviary.coordinator.name" -}}{{ include "aviary.fullname" . }}-coordinator{{- end -}}
{{- define "aviary.etcd.name" -}}{{ include "aviary.fullname" . }}-etcd{{- end -}}

{{- define "aviary.serviceAccountName" -}}
{{- default (include "aviary.agent.name" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "aviary.coordinator.namespace" -}}
{{- default .Release.Namespace .Values.coordinator.namespace -}}
{{- end -}}

{{- define "aviary.coordinator.managementNamespace" -}}
{{- default (include "aviary.coordinator.namespace" .) .Values.coordinator.management.namespace -}}
{{- end -}}

{{- define "aviary.loadtester.namespace" -}}
{{- default .Release.Namespace .Values.loadtester.namespace -}}
{{- end -}}

{{- define "aviary.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Helm's labels on every object's metadata (never in selectors or pod templates). */}}
{{- define "aviary.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: aviary
{{- end -}}

{{/* The Lease namespace of the agent's leader election. */}}
{{- define "aviary.agent.leaseNamespace" -}}
{{- .Values.agent.leaderElection.namespace | default .Values.agent.watchNamespace | default .Release.Namespace -}}
{{- end -}}

{{/* Secrets of the TLS options (cert-manager writes these names). */}}
{{- define "aviary.agent.tlsSecret" -}}
{{- default (printf "%s-tls" (include "aviary.agent.name" .)) .Values.agent.tls.secretName -}}
{{- end -}}
{{- define "aviary.coordinator.tlsSecret" -}}
{{- default (printf "%s-tls" (include "aviary.coordinator.name" .)) .Values.coordinator.tls.secretName -}}
{{- end -}}
