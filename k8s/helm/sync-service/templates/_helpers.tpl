{{/* Names, labels and the image reference shared by the templates. */}}

{{- define "sync.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sync.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sync.labels" -}}
{{ include "sync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sync.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: name a version, not latest" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .Values.image.digest) -}}
{{- fail "image.digest: expected sha256:<64 hex digits>" -}}
{{- end -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "sync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "sync.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "sync.postgres" -}}
{{- if eq .Values.store.type "postgresql" -}}true{{- end -}}
{{- end -}}

{{- define "sync.replicas" -}}
{{- if include "sync.postgres" . -}}{{ .Values.replicas }}{{- else -}}1{{- end -}}
{{- end -}}

{{- define "sync.workloadKind" -}}
{{- if include "sync.postgres" . -}}Deployment{{- else -}}StatefulSet{{- end -}}
{{- end -}}

{{/* Checks of values that would otherwise give a chart that installs but never works. */}}
{{- define "sync.validate" -}}
{{- if not (has .Values.store.type (list "sqlite" "postgresql")) -}}
{{- fail "store.type: sqlite or postgresql" -}}
{{- end -}}
{{- if and (include "sync.postgres" . | not) (gt (int .Values.replicas) 1) -}}
{{- fail "replicas: the SQLite store runs one replica; use store.type=postgresql for more" -}}
{{- end -}}
{{- if and (include "sync.postgres" .) (not .Values.store.postgresql.existingSecret) -}}
{{- fail "store.postgresql.existingSecret: name the Secret holding the database URL" -}}
{{- end -}}
{{- if not .Values.kafka.bootstrapServers -}}
{{- fail "kafka.bootstrapServers: the brokers' host:port list" -}}
{{- end -}}
{{- if not (has .Values.kafka.securityProtocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) -}}
{{- fail "kafka.securityProtocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" -}}
{{- end -}}
{{- if and (hasPrefix "SASL" .Values.kafka.securityProtocol) (not .Values.kafka.sasl.existingSecret) -}}
{{- fail "kafka.sasl.existingSecret: a SASL protocol needs the Secret with its credentials" -}}
{{- end -}}
{{- if not .Values.apiTokens.existingSecret -}}
{{- fail "apiTokens.existingSecret: name the Secret holding the API tokens (there is no default)" -}}
{{- end -}}
{{- if and (not .Values.resourcesFile.existingConfigMap) (not .Values.resourcesFile.inline) -}}
{{- fail "resourcesFile: set existingConfigMap or inline" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (include "sync.postgres" . | not) -}}
{{- fail "autoscaling: needs store.type=postgresql (the SQLite store is one replica)" -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.maxReplicas) (int .Values.topics.partitions) -}}
{{- fail "autoscaling.maxReplicas: more replicas than topics.partitions would sit idle" -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the pods and the migration Job. */}}
{{- define "sync.storeEnv" -}}
{{- if include "sync.postgres" . }}
- name: SYNC_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.store.postgresql.existingSecret }}
      key: {{ .Values.store.postgresql.urlKey }}
{{- else }}
- name: SYNC_DATABASE_URL
  value: sqlite:////var/lib/sync-service/sync-service.db
{{- end }}
{{- end -}}

{{- define "sync.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sync.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
