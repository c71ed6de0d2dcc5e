{{- define "answers.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{/* The release's name (blue-green: one release per slot, e.g. answers-blue). */}}
{{- define "answers.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Service clients use: the release's, or in blue-green the one shared by both slots. */}}
{{- define "answers.serviceName" -}}
{{- if .Values.blueGreen.enabled -}}
{{- .Values.blueGreen.serviceName -}}
{{- else -}}
{{- include "answers.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "answers.labels" -}}
app.kubernetes.io/name: {{ include "answers.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- if .Values.blueGreen.enabled }}
answers.example.com/slot: {{ .Values.blueGreen.slot }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component (api, relay, projector). */}}
{{- define "answers.selector" -}}
app.kubernetes.io/name: {{ include "answers.name" .root }}
app.kubernetes.io/component: {{ .component }}
{{- if .root.Values.blueGreen.enabled }}
answers.example.com/slot: {{ .root.Values.blueGreen.slot }}
{{- else }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}
{{- end -}}

{{- define "answers.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "answers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "answers.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Every process's environment: the ConfigMap, and each secret by reference only (from the
     Secret, or from the file the Vault agent renders). */}}
{{- define "answers.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "answers.fullname" . }}
env:
  {{- if .Values.secrets.vaultAgent.enabled }}
  # The agent renders the secrets as a TOML layer of the configuration (README, "Configuration").
  - name: APP_CONFIG_FILE
    value: /vault/secrets/answers.toml
  {{- else }}
  {{- $secret := .Values.secrets.existingSecret }}
  {{- $keys := .Values.secrets.keys }}
  - name: APP__DATABASE__URL
    valueFrom: { secretKeyRef: { name: {{ $secret }}, key: {{ $keys.databaseUrl }} } }
  - name: APP__DATABASE__API_PASSWORD
    valueFrom: { secretKeyRef: { name: {{ $secret }}, key: {{ $keys.apiDatabasePassword }} } }
  - name: APP__AUTH__SIGNING_KEY
    valueFrom: { secretKeyRef: { name: {{ $secret }}, key: {{ $keys.signingKey }} } }
  - name: APP__ENGINE__PSEUDONYM_KEY
    valueFrom: { secretKeyRef: { name: {{ $secret }}, key: {{ $keys.pseudonymKey }} } }
  - name: APP__PLATFORM__OPERATOR_TOKEN
    valueFrom: { secretKeyRef: { name: {{ $secret }}, key: {{ $keys.operatorToken }} } }
  {{- end }}
{{- end -}}

{{- define "answers.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if .Values.secrets.vaultAgent.enabled }}
vault.hashicorp.com/agent-inject: "true"
vault.hashicorp.com/role: {{ .Values.secrets.vaultAgent.role | quote }}
vault.hashicorp.com/agent-inject-secret-answers.toml: {{ .Values.secrets.vaultAgent.path | quote }}
vault.hashicorp.com/agent-inject-template-answers.toml: |
  {{`{{- with secret "`}}{{ .Values.secrets.vaultAgent.path }}{{`" -}}`}}
  [database]
  url = "{{`{{ .Data.data.database_url }}`}}"
  api_password = "{{`{{ .Data.data.api_database_password }}`}}"
  [auth]
  signing_key = """{{`{{ .Data.data.signing_key }}`}}"""
  [engine]
  pseudonym_key = "{{`{{ .Data.data.pseudonym_key }}`}}"
  [platform]
  operator_token = "{{`{{ .Data.data.operator_token }}`}}"
  {{`{{- end }}`}}
{{- end }}
{{- end -}}

{{/* The three health levels: started (startup), alive (liveness), ready (readiness). */}}
{{- define "answers.probes" -}}
startupProbe:
  httpGet: { path: /health/live, port: http }
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: { path: /health/live, port: http }
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: { path: /health/ready, port: http }
  periodSeconds: 2
  timeoutSeconds: 3
  failureThreshold: 1
{{- end -}}

{{/* The pod template shared by the API's Deployment and its Rollout. */}}
{{- define "answers.apiPod" -}}
metadata:
  labels:
    {{- include "answers.labels" . | nindent 4 }}
    {{- include "answers.selector" (dict "root" . "component" "api") | nindent 4 }}
  annotations:
    {{- include "answers.podAnnotations" . | nindent 4 }}
spec:
  serviceAccountName: {{ include "answers.serviceAccountName" . }}
  # Only the Vault agent needs a token (Kubernetes auth); the processes never call the API.
  automountServiceAccountToken: {{ .Values.secrets.vaultAgent.enabled }}
  terminationGracePeriodSeconds: {{ .Values.api.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: api
      image: {{ include "answers.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["serve"]
      ports:
        - name: http
          containerPort: {{ .Values.api.port }}
          protocol: TCP
      {{- include "answers.env" . | nindent 6 }}
      {{- include "answers.probes" . | nindent 6 }}
      resources:
        {{- toYaml .Values.api.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
{{- end -}}
