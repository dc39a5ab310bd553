{{- define "cloudarb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cloudarb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "cloudarb.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "cloudarb.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "cloudarb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "cloudarb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cloudarb
{{- end }}

{{/* selector labels of one component: (dict "root" $ "component" "worker") */}}
{{- define "cloudarb.selector" -}}
app.kubernetes.io/name: {{ include "cloudarb.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* the generated topic table (files/topics.yaml from schemas/topics.py) */}}
{{- define "cloudarb.topics" -}}
{{- .Files.Get "files/topics.yaml" | required "files/topics.yaml is missing: run scripts/helm_topics.py" }}
{{- end }}

{{- define "cloudarb.bootstrap" -}}
{{- if and .Values.strimzi.enabled (not .Values.kafka.bootstrapServers) }}
{{- printf "%s-kafka-bootstrap:9092" .Values.strimzi.clusterName }}
{{- else }}
{{- required "kafka.bootstrapServers is required: the external Kafka's bootstrap address, e.g. --set kafka.bootstrapServers=kafka:9092 (or strimzi.enabled=true)" .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{- define "cloudarb.secretName" -}}
{{- required "secrets.existingSecret is required: the name of a Secret with CLOUDARB_ADMIN_KEY and CLICKHOUSE_URL (see values.yaml)" .Values.secrets.existingSecret }}
{{- end }}

{{- define "cloudarb.image" -}}
{{- printf "%s:%s" (required "image.repository is required" .Values.image.repository) (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Checks that make rendering fail with a message naming the value (included once, from configmap.yaml).
*/}}
{{- define "cloudarb.validate" -}}
{{- $t := include "cloudarb.topics" . | fromYaml }}
{{- $market := int $t.market.partitions }}
{{- $w := .Values.worker }}
{{- if gt (int $w.replicas) $market }}
{{- fail (printf "worker.replicas=%d exceeds the %d partitions of the market topics (%s): the extra workers would sit idle" (int $w.replicas) $market (join ", " $t.market.topics)) }}
{{- end }}
{{- if $w.autoscaling.enabled }}
{{- if gt (int $w.autoscaling.maxReplicaCount) $market }}
{{- fail (printf "worker.autoscaling.maxReplicaCount=%d exceeds the %d partitions of the market topics (%s)" (int $w.autoscaling.maxReplicaCount) $market (join ", " $t.market.topics)) }}
{{- end }}
{{- if or (lt (int $w.autoscaling.minReplicaCount) 1) (gt (int $w.autoscaling.minReplicaCount) (int $w.autoscaling.maxReplicaCount)) }}
{{- fail (printf "worker.autoscaling.minReplicaCount=%d must be between 1 and worker.autoscaling.maxReplicaCount=%d" (int $w.autoscaling.minReplicaCount) (int $w.autoscaling.maxReplicaCount)) }}
{{- end }}
{{- end }}
{{- if gt (int .Values.sink.replicas) (int $t.maxPartitions) }}
{{- fail (printf "sink.replicas=%d exceeds the largest topic's %d partitions" (int .Values.sink.replicas) (int $t.maxPartitions)) }}
{{- end }}
{{- if gt (int .Values.executors.replicas) (int $t.decisions.partitions) }}
{{- fail (printf "executors.replicas=%d exceeds the %d partition(s) of %s: one executor acts on decisions" (int .Values.executors.replicas) (int $t.decisions.partitions) $t.decisions.topic) }}
{{- end }}
{{- if gt (int .Values.alerts.replicas) 1 }}
{{- fail (printf "alerts.replicas=%d: at most 1 (the alerts topic has one partition)" (int .Values.alerts.replicas)) }}
{{- end }}
{{- if not (has .Values.outputs.layout (list "split" "serve")) }}
{{- fail (printf "outputs.layout=%v: split or serve" .Values.outputs.layout) }}
{{- end }}
{{- range $k, $v := .Values.config.extraEnv }}
{{- if regexMatch "(?i)(PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL)" $k }}
{{- fail (printf "config.extraEnv.%s looks like a secret: put it in secrets.existingSecret / secrets.providersSecret, not in the ConfigMap" $k) }}
{{- end }}
{{- if regexMatch "://[^/@\\s:]+:[^/@\\s]+@" (toString $v) }}
{{- fail (printf "config.extraEnv.%s is a URL with credentials: put it in a Secret" $k) }}
{{- end }}
{{- end }}
{{- if regexMatch "://[^/@\\s:]+:[^/@\\s]+@" .Values.kafka.bootstrapServers }}
{{- fail "kafka.bootstrapServers contains credentials: use KAFKA_SASL_USERNAME/PASSWORD in the Secret" }}
{{- end }}
{{- end }}

{{/*
Environment of a container: the shared ConfigMap, then secret keys by name.
(dict "root" $ "keys" (list "CLICKHOUSE_URL") "providers" true)
*/}}
{{- define "cloudarb.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "cloudarb.fullname" .root }}-env
{{- if and .providers .root.Values.secrets.providersSecret }}
  - secretRef:
      name: {{ .root.Values.secrets.providersSecret }}
{{- end }}
env:
{{- range .keys }}
  - name: {{ . }}
    valueFrom:
      secretKeyRef: {name: {{ include "cloudarb.secretName" $.root }}, key: {{ . }}}
{{- end }}
{{- range (list "KAFKA_SASL_USERNAME" "KAFKA_SASL_PASSWORD" "KAFKA_SSL_KEY_PASSWORD") }}
  - name: {{ . }}
    valueFrom:
      secretKeyRef: {name: {{ include "cloudarb.secretName" $.root }}, key: {{ . }}, optional: true}
{{- end }}
  - {name: CLOUDARB_METRICS_PORT, value: {{ .root.Values.metrics.port | toString | quote }}}
  - {name: CLOUDARB_METRICS_ADDR, value: "0.0.0.0"}
{{- end }}

{{/* exec probes of files/probe.py: (dict "live" "alive" "ready" "alive kafka clickhouse") */}}
{{- define "cloudarb.execProbes" -}}
livenessProbe:
  exec:
    command: [python, /etc/cloudarb-probe/probe.py, {{ .live | splitList " " | join ", " }}]
  initialDelaySeconds: 10
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  exec:
    command: [python, /etc/cloudarb-probe/probe.py, {{ .ready | splitList " " | join ", " }}]
  initialDelaySeconds: 5
  periodSeconds: 15
  timeoutSeconds: 10
  failureThreshold: 3
{{- end }}

{{- define "cloudarb.httpProbes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 5
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 15
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}

{{/*
One Deployment. (dict "root" $ "component" "worker" "v" .Values.worker "args" (list "worker")
  "env" <rendered env> "probes" <rendered probes> "ports" bool "replicas" bool)
*/}}
{{- define "cloudarb.deployment" -}}
{{- $root := .root }}
{{- $v := .v }}
{{- $req := (($v.resources | default dict).requests | default dict) }}
{{- if not (and $req.cpu $req.memory) }}
{{- fail (printf "%s.resources.requests needs cpu and memory" .component) }}
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "cloudarb.fullname" $root }}-{{ .component }}
  labels:
    {{- include "cloudarb.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- if .replicas }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- if .strategy }}
  strategy:
    {{- toYaml .strategy | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "cloudarb.selector" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "cloudarb.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    spec:
      serviceAccountName: {{ include "cloudarb.fullname" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds | default 30 }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "cloudarb.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- range .args }}
            - {{ . | quote }}
            {{- end }}
          {{- .env | nindent 10 }}
          ports:
            {{- if .port }}
            - {name: http, containerPort: {{ .port }}, protocol: TCP}
            {{- end }}
            # cloudarb.metrics: every process serves its metrics here (CLOUDARB_METRICS_PORT, cloudarb.env)
            - {name: metrics, containerPort: {{ $root.Values.metrics.port }}, protocol: TCP}
          {{- .probes | nindent 10 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            - {name: probe, mountPath: /etc/cloudarb-probe, readOnly: true}
      volumes:
        - name: tmp
          emptyDir: {}
        - name: probe
          configMap:
            name: {{ include "cloudarb.fullname" $root }}-probe
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "cloudarb.fullname" $root }}-{{ .component }}
  labels:
    {{- include "cloudarb.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: {{ ($v.pdb | default dict).maxUnavailable | default 1 }}
  selector:
    matchLabels:
      {{- include "cloudarb.selector" (dict "root" $root "component" .component) | nindent 6 }}
{{- end }}

{{- define "cloudarb.providerArgs" -}}
{{- $out := list }}
{{- range .Values.connectors.providers }}{{ $out = concat $out (list "--provider" .) }}{{ end }}
{{- toYaml $out }}
{{- end }}
