{{/* Names, labels and shared fragments. Everything here is named deskgen.*. */}}

{{/* Chart name, overridable. */}}
{{- define "deskgen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name alone when it already contains the chart name. */}}
{{- define "deskgen.fullname" -}}
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

{{/* Name of one component's objects: (dict "root" $ "component" "classifier"). */}}
{{- define "deskgen.componentName" -}}
{{- printf "%s-%s" (include "deskgen.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "deskgen.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release (never add version-like values here). */}}
{{- define "deskgen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deskgen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "classifier"). */}}
{{- define "deskgen.componentSelectorLabels" -}}
{{ include "deskgen.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* General labels: selector labels plus chart, version, manager and product. */}}
{{- define "deskgen.labels" -}}
helm.sh/chart: {{ include "deskgen.chart" . }}
{{ include "deskgen.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: deskgen
{{- end }}

{{/* General labels of one component: (dict "root" $ "component" "classifier"). */}}
{{- define "deskgen.componentLabels" -}}
{{ include "deskgen.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "deskgen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "deskgen.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The topology: topology.yaml, written by `deskgen topology` from common/topology.py (never by hand). */}}
{{- define "deskgen.topology" -}}
{{- .Files.Get "topology.yaml" }}
{{- end }}

{{/* Every stage with the event kind (topic suffix) it consumes, as YAML: stage: kind. */}}
{{- define "deskgen.stageTopics" -}}
{{- range (include "deskgen.topology" . | fromYaml).stages }}
{{ .name }}: {{ .consumes }}
{{- end }}
{{- end }}

{{/* Every stage's name in flow order, as a JSON list. */}}
{{- define "deskgen.stageNames" -}}
{{- $names := list }}
{{- range (include "deskgen.topology" . | fromYaml).stages }}{{ $names = append $names .name }}{{ end }}
{{- $names | toJson }}
{{- end }}

{{/* Every pipeline event kind (topic suffix), as a JSON list. */}}
{{- define "deskgen.kinds" -}}
{{- (include "deskgen.topology" . | fromYaml).kinds | toJson }}
{{- end }}

{{/* Consumer group of a stage: (dict "root" $ "stage" "classifier"). kafka.groupPrefix also reaches the
     stages as DESKGEN_KAFKA_GROUP_PREFIX, so KEDA watches the group the stages join. */}}
{{- define "deskgen.consumerGroup" -}}
{{- printf "%s%s" .root.Values.kafka.groupPrefix .stage }}
{{- end }}

{{/* Image reference: (dict "root" $ "image" <stage image block>). */}}
{{- define "deskgen.image" -}}
{{- $registry := .root.Values.image.registry }}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- if $registry }}
{{- printf "%s/%s:%s" $registry .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* ---- Kafka ---- */}}

{{- define "deskgen.kafka.saslEnabled" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{- define "deskgen.kafka.tlsEnabled" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/* Secret holding the SASL credentials: the existing one, or the one this chart creates. */}}
{{- define "deskgen.kafka.secretName" -}}
{{- .Values.kafka.sasl.existingSecret | default (printf "%s-kafka" (include "deskgen.fullname" .)) }}
{{- end }}

{{- define "deskgen.kafka.caMountPath" -}}
/etc/deskgen/kafka-ca
{{- end }}

{{/* Distinct ports of kafka.bootstrapServers (host:port,host:port). */}}
{{- define "deskgen.kafka.ports" -}}
{{- $ports := list }}
{{- range splitList "," .Values.kafka.bootstrapServers }}
{{- $parts := splitList ":" (trim .) }}
{{- if ne (len $parts) 2 }}
{{- fail (printf "kafka.bootstrapServers: %q is not host:port" (trim .)) }}
{{- end }}
{{- $ports = append $ports (index $parts 1 | int) }}
{{- end }}
{{- $ports | uniq | toJson }}
{{- end }}

{{/* Kafka environment: (dict "root" $ "secretName" <SASL Secret>); the topics hook passes its own Secret. */}}
{{- define "deskgen.kafka.env" -}}
{{- $secretName := .secretName }}
{{- with .root -}}
- name: DESKGEN_KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: DESKGEN_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if include "deskgen.kafka.saslEnabled" . }}
- name: DESKGEN_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: DESKGEN_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secretName }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: DESKGEN_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secretName }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if and (include "deskgen.kafka.tlsEnabled" .) .Values.kafka.tls.caSecret }}
- name: DESKGEN_KAFKA_SSL_CA_LOCATION
  value: {{ printf "%s/%s" (include "deskgen.kafka.caMountPath" .) .Values.kafka.tls.caKey | quote }}
{{- end }}
- name: DESKGEN_TOPIC_PREFIX
  value: {{ .Values.topics.prefix | quote }}
{{- end }}
{{- end }}

{{/* CA volume and mount, present only with TLS and a CA Secret. */}}
{{- define "deskgen.kafka.caVolume" -}}
{{- if and (include "deskgen.kafka.tlsEnabled" .) .Values.kafka.tls.caSecret -}}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: {{ .Values.kafka.tls.caKey }}
{{- end }}
{{- end }}

{{- define "deskgen.kafka.caVolumeMount" -}}
{{- if and (include "deskgen.kafka.tlsEnabled" .) .Values.kafka.tls.caSecret -}}
- name: kafka-ca
  mountPath: {{ include "deskgen.kafka.caMountPath" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* ---- S3 ---- */}}

{{- define "deskgen.s3.secretName" -}}
{{- .Values.s3.existingSecret | default (printf "%s-s3" (include "deskgen.fullname" .)) }}
{{- end }}

{{- define "deskgen.s3.endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "%s:%d" (include "deskgen.componentName" (dict "root" . "component" "minio")) (.Values.minio.port | int) }}
{{- else }}
{{- .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{/* Port of the S3 endpoint: the explicit one, else 443/80 by scheme. */}}
{{- define "deskgen.s3.port" -}}
{{- $parts := splitList ":" (include "deskgen.s3.endpoint" .) }}
{{- if eq (len $parts) 2 }}
{{- index $parts 1 | int }}
{{- else if and .Values.s3.secure (not .Values.minio.enabled) }}443
{{- else }}80
{{- end }}
{{- end }}

{{- define "deskgen.s3.env" -}}
- name: DESKGEN_S3_ENDPOINT
  value: {{ include "deskgen.s3.endpoint" . | quote }}
- name: DESKGEN_S3_SECURE
  value: {{ and .Values.s3.secure (not .Values.minio.enabled) | quote }}
- name: DESKGEN_S3_BUCKET
  value: {{ .Values.s3.bucket | quote }}
{{- with .Values.s3.region }}
- name: DESKGEN_S3_REGION
  value: {{ . | quote }}
{{- end }}
- name: DESKGEN_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "deskgen.s3.secretName" . }}
      key: {{ .Values.s3.accessKeyKey }}
- name: DESKGEN_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "deskgen.s3.secretName" . }}
      key: {{ .Values.s3.secretKeyKey }}
{{- end }}

{{/* ---- Checks that the schema cannot express; called from every stage template. ---- */}}
{{- define "deskgen.validate" -}}
{{- if and (include "deskgen.kafka.saslEnabled" .) (not .Values.kafka.sasl.existingSecret) (or (not .Values.kafka.sasl.username) (not .Values.kafka.sasl.password)) }}
{{- fail "kafka.securityProtocol SASL_* needs kafka.sasl.existingSecret or kafka.sasl.username and kafka.sasl.password" }}
{{- end }}
{{- if and (not .Values.s3.existingSecret) (or (not .Values.s3.accessKey) (not .Values.s3.secretKey)) }}
{{- fail "s3 needs s3.existingSecret or s3.accessKey and s3.secretKey" }}
{{- end }}
{{- if and (not .Values.minio.enabled) (not .Values.s3.endpoint) }}
{{- fail "s3.endpoint is empty and minio.enabled is false: point the stages at an S3 endpoint" }}
{{- end }}
{{- range $entry := .Values.env }}
{{- if eq $entry.name "DESKGEN_KAFKA_GROUP_PREFIX" }}
{{- fail "env: DESKGEN_KAFKA_GROUP_PREFIX would leave KEDA watching the old consumer groups; set kafka.groupPrefix instead" }}
{{- end }}
{{- end }}
{{- range $stage, $_ := include "deskgen.stageTopics" . | fromYaml }}
{{- if not (hasKey $.Values $stage) }}
{{- fail (printf "topology.yaml names the stage %s but the values have no %s block (give it one like the other stages')" $stage $stage) }}
{{- end }}
{{- $values := index $.Values $stage }}
{{- range $entry := $values.env }}
{{- if eq $entry.name "DESKGEN_KAFKA_GROUP_PREFIX" }}
{{- fail (printf "%s.env: DESKGEN_KAFKA_GROUP_PREFIX would leave KEDA watching the old consumer groups; set kafka.groupPrefix instead" $stage) }}
{{- end }}
{{- end }}
{{- if $values.enabled }}
{{- if ge ($values.shutdownGraceSeconds | int) ($values.terminationGracePeriodSeconds | int) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed %s.shutdownGraceSeconds (%d)" $stage ($values.terminationGracePeriodSeconds | int) $stage ($values.shutdownGraceSeconds | int)) }}
{{- end }}
{{- $scaling := $values.autoscaling }}
{{- if $scaling.enabled }}
{{- if gt ($scaling.minReplicaCount | int) ($scaling.maxReplicaCount | int) }}
{{- fail (printf "%s.autoscaling.minReplicaCount exceeds maxReplicaCount" $stage) }}
{{- end }}
{{- if and (gt ($scaling.maxReplicaCount | int) ($.Values.topics.partitions | int)) (not $scaling.allowAbovePartitions) }}
{{- fail (printf "%s.autoscaling.maxReplicaCount (%d) exceeds topics.partitions (%d): extra consumers would sit idle; raise the partitions or set %s.autoscaling.allowAbovePartitions" $stage ($scaling.maxReplicaCount | int) ($.Values.topics.partitions | int) $stage) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* A KEDA TriggerAuthentication is needed when some stage autoscales and Kafka has SASL or a CA Secret. */}}
{{- define "deskgen.kafka.triggerAuthNeeded" -}}
{{- $scaling := false }}
{{- range $stage, $_ := include "deskgen.stageTopics" . | fromYaml }}
{{- $values := index $.Values $stage }}
{{- if and $values.enabled $values.autoscaling.enabled }}{{ $scaling = true }}{{ end }}
{{- end }}
{{- if and $scaling (or (include "deskgen.kafka.saslEnabled" .) (and (include "deskgen.kafka.tlsEnabled" .) .Values.kafka.tls.caSecret)) }}true{{ end }}
{{- end }}
